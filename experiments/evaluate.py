"""Re-evaluate a finished training run from its checkpoint, with more draws or larger batches.

    python -m experiments.evaluate run=outputs/runs/<run folder>                     # the run's own settings
    python -m experiments.evaluate run=outputs/runs/<run folder> eval.batch_size=1024 eval.draws=20
    python -m experiments.evaluate run=<run folder> checkpoint=<other.pt> name=early
    python -m experiments.evaluate run=<run folder> eval.inception_weights=<weights file>  # fid_inception

The models are rebuilt from the run's ``.hydra/config.yaml``, loaded from ``checkpoints/last.pt`` (or
``checkpoint=``), and evaluated at the checkpoint's step with the random generator the run used there
(:func:`gan.evaluation.eval_generator`), so without overrides the metrics equal the run's last line of
``metrics.jsonl`` (on the same device). Only ``eval.<key>=...`` overrides are accepted, with ``device=``;
``eval.draws=k`` averages the per-batch metrics over ``k`` draws with 95% intervals (``<key>_ci95``);
``eval.inception_weights`` is torch-fidelity's ``pt_inception-2015-12-05-6726825d.pth`` (image runs).

Writes ``<run>/evaluations/<name>.json`` (step, checkpoint, overrides, the evaluation settings used and
the metrics; ``name=`` or the overrides, ``default`` without any) and prints the metrics. Never touches
``metrics.jsonl`` or ``summary.json``; ``scripts.summarize`` adds the file's metrics as columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.app import one_line_errors, precheck, quote_path_arguments, refuse_multirun
from gan.config import ConfigError
from gan.finished import (
    check_overrides,
    checkpoint_file,
    file_name,
    load_finished_run,
    read_run_config,
)
from gan.runfolder import EVALUATIONS

ALLOWED = ("run", "checkpoint", "name", "device")  # besides eval.<key>=...


def evaluate_run(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    checkpoint: str | Path | None = None,
    name: str | None = None,
    device: str | None = None,
) -> tuple[Path, dict]:
    """Evaluate the run in ``run_dir`` at its checkpoint with ``overrides`` (``"eval.<key>=value"``
    strings, as on the command line); returns the path written and its content.

    The file is ``run_dir/evaluations/<name>.json``, by default named after the overrides sorted
    (``default`` without any), prefixed with ``step<step>_`` when ``checkpoint`` is given. It holds
    ``step``, ``checkpoint`` (relative to ``run_dir`` when inside it), ``overrides``, ``eval`` (every
    evaluation setting used), ``device`` and ``metrics`` (:func:`gan.evaluation.evaluate`'s row).

    Raises :class:`ConfigError` (one line, nothing written) for a folder that is not a training run, a
    missing, unreadable or foreign checkpoint, an override of anything but ``eval``, or a bad value.
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, check_overrides(overrides, allowed=()), device=device)
    path = checkpoint_file(run_dir, checkpoint)

    from gan.evaluation import eval_generator, evaluate  # torch: only once the input is known to be usable
    from gan.image_eval import quality_networks
    from gan.runfolder import atomic_write_json

    run = load_finished_run(cfg, path)
    classifier, inception = quality_networks(run.data, cfg.eval, device=run.device)
    metrics = evaluate(
        run.generator,
        run.critic,
        run.data,
        run.objective,
        cfg.eval,
        rng=eval_generator(cfg.seed, run.step, run.device),
        index=run.step // cfg.eval.every,  # as in training: the probe runs where it ran there
        classifier=classifier,
        inception=inception,
    )
    if name:
        stem = file_name(str(name).removesuffix(".json"))
    else:
        stem = file_name(",".join(sorted(overrides, key=lambda o: o.partition("=")[0])) or "default")
        if checkpoint is not None:
            stem = f"step{run.step}_{stem}"
    inside = path.resolve().is_relative_to(run_dir.resolve())
    record = {
        "step": run.step,
        "checkpoint": str(path.resolve().relative_to(run_dir.resolve()) if inside else path.resolve()),
        "overrides": list(overrides),
        "eval": OmegaConf.to_container(cfg.eval, resolve=True),
        "device": str(run.device),
        "metrics": metrics,
    }
    out = run_dir / EVALUATIONS / f"{stem}.json"
    atomic_write_json(out, record)
    return out, record


def metrics_table(metrics: dict) -> str:
    """``key  value  ci95`` per metric, the ``<key>_ci95`` entries in the third column."""
    from metrics.stats import CI95_SUFFIX  # scipy: not needed to reject bad input

    rows = [(k, v, metrics.get(k + CI95_SUFFIX)) for k, v in metrics.items() if not k.endswith(CI95_SUFFIX)]
    width = max([len("key"), *(len(k) for k, _, _ in rows)])

    def fmt(value) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)

    lines = [f"{'key':<{width}}  {'value':>12}  {'ci95':>12}"]
    lines += [f"{k:<{width}}  {fmt(v):>12}  {fmt(ci):>12}" for k, v, ci in rows]
    return "\n".join(lines)


def _main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "run"):
        raise ConfigError("run=<run folder> is required: the folder of the training run to evaluate")
    given = [o for o in HydraConfig.get().overrides.task if o.startswith("eval.")]
    out, record = evaluate_run(
        str(cfg.run),
        given,
        checkpoint=None if cfg.checkpoint is None else str(cfg.checkpoint),
        name=None if cfg.name is None else str(cfg.name),
        device=None if cfg.device is None else str(cfg.device),
    )
    print(f"run {cfg.run} at step {record['step']} ({record['checkpoint']})")
    print(metrics_table(record["metrics"]))
    print(f"wrote {out}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    one_line_errors(lambda: _main(cfg))


def cli() -> None:
    quote_path_arguments()
    refuse_multirun("experiments.evaluate")
    precheck(lambda overrides: check_overrides(overrides, allowed=ALLOWED))
    main()


if __name__ == "__main__":
    cli()
