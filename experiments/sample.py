"""Draw samples from a finished run's generator into a PNG.

    python -m experiments.sample run=outputs/runs/<run folder>                  # 64 samples
    python -m experiments.sample run=<run folder> n=256 seed=1
    python -m experiments.sample run=<run folder> checkpoint=<other.pt> out=figures/early.png

Image data give a grid of ``n`` generated images (about sqrt(n) per row); 2-D data a scatter of ``n``
generated (orange) against ``n`` real (blue) points over the critic's contour, when the objective has a
critic. The models are rebuilt from the run's ``.hydra/config.yaml`` and loaded from
``checkpoints/last.pt`` (or ``checkpoint=``). The samples depend only on ``seed`` (the run's own by
default), the checkpoint's step and ``n``: with the run's seed, ``n=64`` images (or ``n=512`` points)
are the samples of the run's TensorBoard image at that step.

Writes ``<run>/samples_step<step>_n<n>.png`` (``_seed<seed>`` added for another seed than the run's) or
``out=`` (relative to the current folder) and prints its path.
"""

from __future__ import annotations

import io
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.app import one_line_errors, precheck, quote_path_arguments, refuse_multirun
from gan.config import SAMPLE, ConfigError, validate
from gan.finished import (
    check_overrides,
    checkpoint_file,
    load_finished_run,
    read_run_config,
)

ALLOWED = ("run", "n", "checkpoint", "out", "seed", "device")


def sample_run(
    run_dir: str | Path,
    *,
    n: int = 64,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> Path:
    """Write a PNG of ``n`` samples of the run in ``run_dir`` at its checkpoint; returns its path.

    Raises :class:`ConfigError` (one line, nothing written) for a folder that is not a training run, a
    missing, unreadable or foreign checkpoint, data that are neither images nor 2-D points, or a bad
    ``n``, ``seed`` or ``out``.
    """
    run_dir = Path(run_dir)
    validate(OmegaConf.create({"n": n, "seed": seed}), SAMPLE)
    if out is not None and Path(out).suffix.lower() != ".png":
        raise ConfigError(f"out={out}: must name a .png file")
    cfg = read_run_config(run_dir, device=device)
    path = checkpoint_file(run_dir, checkpoint)

    import torch  # torch and plotting: only once the input is known to be usable
    from torchvision.utils import save_image

    from gan.evaluation import eval_generator, sample_generator
    from gan.image_eval import generator_grid, is_image_data
    from gan.plots import toy_scatter
    from gan.runfolder import atomic_write_bytes

    run = load_finished_run(cfg, path)
    if not (is_image_data(run.data) or tuple(run.data.shape) == (2,)):
        raise ConfigError(
            f"run={run_dir}: samples of shape {tuple(run.data.shape)} are neither images nor 2-D"
        )
    seed = cfg.seed if seed is None else seed
    if out is None:
        out = run_dir / f"samples_step{run.step}_n{n}{'' if seed == cfg.seed else f'_seed{seed}'}.png"
    # The generator of the run's own plots at this step: the same seed gives the same samples.
    rng = eval_generator(seed, run.step, run.device)
    buffer = io.BytesIO()
    for module in (run.generator, run.critic):
        if module is not None:
            module.eval()  # no batch statistics, no power-iteration updates while drawing
    with torch.no_grad():
        if is_image_data(run.data):
            grid = generator_grid(run.generator, rng, value_range=run.data.pixel_range, n=n)
            save_image(grid, buffer, format="png")
        else:
            real = run.data.sample(n, rng)
            fig = toy_scatter(real, sample_generator(run.generator, n, rng), run.critic)
            fig.savefig(buffer, format="png")
            import matplotlib.pyplot as plt  # after gan.plots, which selects the headless backend

            plt.close(fig)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return Path(out)


def _main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "run"):
        raise ConfigError("run=<run folder> is required: the folder of the training run to sample from")
    path = sample_run(
        str(cfg.run),
        n=cfg.n,
        checkpoint=None if cfg.checkpoint is None else str(cfg.checkpoint),
        out=None if cfg.out is None else str(cfg.out),
        seed=cfg.seed,
        device=None if cfg.device is None else str(cfg.device),
    )
    print(path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    one_line_errors(lambda: _main(cfg))


def cli() -> None:
    quote_path_arguments()
    refuse_multirun("experiments.sample")
    precheck(lambda overrides: check_overrides(overrides, allowed=ALLOWED, eval_keys=False))
    main()


if __name__ == "__main__":
    cli()
