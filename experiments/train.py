"""Train a GAN and log its critic's estimate beside the exact W1 of the same minibatches.

    python -m experiments.train                                   # default: WGAN-GP on 8 Gaussians
    python -m experiments.train objective=wgan_gp data=gaussians25 train.steps=2000 seed=3
    python -m experiments.train --multirun seed=0,1,2             # one run folder per seed
    python -m experiments.train hydra.run.dir=outputs/my_run      # choose the run folder

Each run writes ``.hydra/``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/last.pt`` and ``tb/``
into its folder; ``tensorboard --logdir <folder>`` shows the curves.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gan.config import ConfigError, check_group_choices, check_output_dirs, job_dirname, validate

log = logging.getLogger(__name__)
OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)  # used by hydra.sweep.subdir


def _record_failure(run_dir: str, exc: Exception) -> None:
    """A job that stopped before train() wrote its summary still says why, in its own folder."""
    from gan.runlog import atomic_write_json

    path = Path(run_dir) / "summary.json"
    if not path.exists():
        error = f"{type(exc).__name__}: {exc}"
        summary = {"status": "failed", "steps_done": 0, "elapsed_s": 0.0, "final": {}, "error": error}
        atomic_write_json(path, summary)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    try:
        validate(cfg)
        from gan.trainer import train  # imported after validation: bad input fails without loading torch

        log.info("run folder: %s", run_dir)
        summary = train(cfg, run_dir)  # raises ConfigError from setup, before it writes anything
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
    # The sweep objective for Hydra's optimisation sweepers: large-sample W1 to held-out data.
    return summary["final"].get("w1_large")


def cli() -> None:
    overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    try:
        check_output_dirs(overrides)
        check_group_choices(overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        pass  # malformed overrides: let Hydra report them in its own words
    main()


if __name__ == "__main__":
    cli()
