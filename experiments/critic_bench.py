"""Train only a critic between two distributions whose W1 and optimal potential are known, and
measure its estimate, its gradient and its Lipschitz constant against that truth.

    python -m experiments.critic_bench                                  # WGAN-GP critic, funnels in d = 2
    python -m experiments.critic_bench objective=ctransform problem=translation problem.dim=64 seed=1
    python -m experiments.critic_bench problem=funnels problem.dim=128 problem.n_funnels=8 train.steps=5000
    python -m experiments.critic_bench hydra.run.dir=outputs/my_bench_run     # choose the run folder
    python -m experiments.critic_bench --multirun objective=wgan_gp,wgan_lp problem.dim=2,16 seed=0,1,2

    # the known-truth table: 6 objectives x 2 problems x d = 2, 16, 64 x 3 seeds, two jobs at a time
    OMP_NUM_THREADS=1 python -m experiments.critic_bench --multirun hydra/launcher=joblib \\
        hydra.launcher.n_jobs=2 train.progress=false \\
        objective=wgan_gp,wgan_clip,wgan_lp,wgan_sn,ctransform,c_eps \\
        problem=translation,funnels problem.dim=2,16,64 seed=0,1,2
    python -m scripts.summarize outputs/critic_bench/sweeps/<sweep folder>

Problems (``problem=``): ``translation`` (Q = P + m, W1 = ‖m‖) and ``funnels`` (P moved along the
transport rays of u(x) = min_k ‖x − c_k‖ + b_k; W1 by Monte Carlo with a 95% interval); see
``metrics/known.py``. Q is the "real" distribution, P the "generated" one. Each run writes
``.hydra/``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/last.pt`` and ``tb/`` into its folder,
like a training run, so ``scripts.summarize`` and ``tensorboard --logdir <folder>`` read it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gan.config import (
    ConfigError,
    check_group_choices,
    check_output_dirs,
    group_options,
    job_dirname,
    validate,
)

log = logging.getLogger(__name__)
OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)  # used by hydra.sweep.subdir


def check_choices(overrides: list[str]) -> None:
    """One-line :class:`ConfigError` for a ``problem=`` or ``objective=`` override (sweeps included)
    that names no usable option, before Hydra creates any folder."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        group = override.key_or_group
        if group not in ("problem", "objective") or override.is_delete() or override.package:
            continue
        if group == "problem":
            allowed = group_options("problem")
        else:
            from gan.critic_bench import CRITIC_OBJECTIVES  # loads torch: only when an objective is named

            allowed = list(CRITIC_OBJECTIVES)
        values = (
            list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        )
        for value in values:
            if value is not None and str(value) not in allowed:
                raise ConfigError(
                    f"{group}={value} is not an option here; choose one of: {', '.join(allowed)}"
                )
    check_group_choices(overrides)  # model=


def _record_failure(run_dir: str, exc: Exception) -> None:
    """A job that stopped before run() wrote its summary still says why, in its own folder."""
    from gan.runlog import atomic_write_json

    path = Path(run_dir) / "summary.json"
    if not path.exists():
        error = f"{type(exc).__name__}: {exc}"
        atomic_write_json(
            path, {"status": "failed", "steps_done": 0, "elapsed_s": 0.0, "final": {}, "error": error}
        )


@hydra.main(version_base="1.3", config_path="../conf", config_name="critic_bench")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    try:
        validate(cfg)
        from gan.critic_bench import run  # imported after validation: bad input fails sooner

        log.info("run folder: %s", run_dir)
        summary = run(cfg, run_dir)  # raises ConfigError from setup, before it writes anything
    except ConfigError as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            _record_failure(run_dir, exc)
            raise  # the launcher records it and goes on with the other jobs
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        _record_failure(run_dir, exc)
        raise
    print(f"run folder: {run_dir}\nsee the curves: tensorboard --logdir {run_dir}")
    # The sweep objective for Hydra's optimisation sweepers: the estimate's error against the true W1.
    return summary["final"].get("critic_true_rel_error")


def cli() -> None:
    overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    try:
        check_output_dirs(overrides)
        check_choices(overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        pass  # malformed overrides: let Hydra report them in its own words
    main()


if __name__ == "__main__":
    cli()
