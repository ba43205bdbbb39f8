"""Figures for TensorBoard and for ``experiments.sample``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: runs on clusters and CI without a display

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


@torch.no_grad()
def toy_scatter(real: torch.Tensor, fake: torch.Tensor, critic=None, *, grid: int = 80) -> Figure:
    """Real (blue) and generated (orange) 2D points over the critic's contour, when there is one."""
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    both = torch.cat([real, fake])
    lo, hi = both.quantile(0.005, dim=0), both.quantile(0.995, dim=0)
    pad = 0.15 * (hi - lo) + 1e-3
    lo, hi = lo - pad, hi + pad
    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    if critic is not None:
        xs, ys = torch.linspace(lo[0], hi[0], grid), torch.linspace(lo[1], hi[1], grid)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        points = torch.stack([gx.flatten(), gy.flatten()], dim=1)
        device = next(critic.parameters()).device
        values = critic(points.to(device)).float().cpu().view(grid, grid)
        contour = ax.contourf(gx, gy, values, levels=20, cmap="Greys", alpha=0.6)
        fig.colorbar(contour, ax=ax, fraction=0.046, pad=0.04, label="critic f")
    ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:blue", label="real", alpha=0.6)
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c="tab:orange", label="generated", alpha=0.6)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=3)
    fig.tight_layout()
    return fig
