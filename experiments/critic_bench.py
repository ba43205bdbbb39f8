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

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.app import precheck, run_job
from gan.config import check_group_choices, job_dirname

OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)  # used by hydra.sweep.subdir


def check_choices(overrides: list[str]) -> None:
    """One-line :class:`gan.config.ConfigError` for a group option (sweeps included) that names no
    usable option, before Hydra creates any folder: ``objective=`` takes the W1 critics only."""
    allowed = {}
    if any(o.lstrip("+~").startswith("objective=") for o in overrides):
        from gan.critic_bench import w1_critic_objectives  # loads torch: only when an objective is named

        allowed["objective"] = w1_critic_objectives()
    check_group_choices(overrides, allowed=allowed)


def _runner():
    from gan.critic_bench import run

    return run


@hydra.main(version_base="1.3", config_path="../conf", config_name="critic_bench")
def main(cfg: DictConfig) -> float | None:
    summary = run_job(cfg, _runner)
    # The sweep objective for Hydra's optimisation sweepers: the estimate's error against the true W1.
    return summary["final"].get("critic_true_rel_error")


def cli() -> None:
    precheck(check_choices)
    main()


if __name__ == "__main__":
    cli()
