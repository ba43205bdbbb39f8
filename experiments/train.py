"""Train a GAN and log its critic's estimate beside the exact W1 of the same minibatches.

    python -m experiments.train                                   # default: WGAN-GP on 8 Gaussians
    python -m experiments.train objective=wgan_gp data=gaussians25 train.steps=2000 seed=3
    python -m experiments.train --multirun seed=0,1,2             # one run folder per seed
    python -m experiments.train hydra.run.dir=outputs/my_run      # choose the run folder
    python -m experiments.train train.parallel_seeds=8            # seeds 0..7 batched in one process

Each run writes ``.hydra/``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/last.pt`` and ``tb/``
into its folder; ``tensorboard --logdir <folder>`` shows the curves.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.app import precheck, run_job
from gan.config import check_group_choices, job_dirname

OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)  # used by hydra.sweep.subdir


def _trainer():
    from gan.trainer import train

    return train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    summary = run_job(cfg, _trainer)
    # The sweep objective for Hydra's optimisation sweepers: large-sample W1 to held-out data.
    return summary["final"].get("w1_large")


def cli() -> None:
    precheck(check_group_choices)
    main()


if __name__ == "__main__":
    cli()
