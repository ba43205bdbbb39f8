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

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gan.config import ConfigError, check_group_choices, validate

log = logging.getLogger(__name__)


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
            raise  # the launcher records it and goes on with the other jobs
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"run folder: {run_dir}\nsee the curves: tensorboard --logdir {run_dir}")
    # The sweep objective for Hydra's optimisation sweepers: large-sample W1 to held-out data.
    return summary["final"].get("w1_large")


def cli() -> None:
    try:
        check_group_choices(arg for arg in sys.argv[1:] if not arg.startswith("-"))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        pass  # malformed overrides: let Hydra report them in its own words
    main()


if __name__ == "__main__":
    cli()
