"""Figures for TensorBoard and for ``experiments.sample``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: runs on clusters and CI without a display

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def toy_limits(points: torch.Tensor, *, pad: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis limits around a 2-D sample: its 0.1% and 99.9% quantiles, widened by ``pad`` of the range."""
    points = points.detach().double().cpu()
    lo, hi = points.quantile(0.001, dim=0), points.quantile(0.999, dim=0)
    margin = pad * (hi - lo) + 1e-3
    return lo - margin, hi + margin


@torch.no_grad()
def toy_scatter(
    real: torch.Tensor,
    fake: torch.Tensor,
    critic=None,
    *,
    limits=None,
    title: str | None = None,
    grid: int = 80,
) -> Figure:
    """Real (blue) and generated (orange) 2-D points over the critic's contour, when there is one.

    ``limits`` (``(low, high)``, each of two values) fixes the axes, so that the frames of a run line up
    when TensorBoard's step slider moves through them; by default they follow both samples.
    """
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    lo, hi = limits if limits is not None else toy_limits(torch.cat([real, fake]), pad=0.15)
    lo, hi = lo.float(), hi.float()
    # Fonts sized for TensorBoard's Images tab, which shows the figure at about half its 500 pixels.
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if critic is not None:
        xs, ys = torch.linspace(lo[0], hi[0], grid), torch.linspace(lo[1], hi[1], grid)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        points = torch.stack([gx.flatten(), gy.flatten()], dim=1)
        device = next(critic.parameters()).device
        values = critic(points.to(device)).float().cpu().view(grid, grid)
        contour = ax.contourf(gx, gy, values, levels=20, cmap="Greys", alpha=0.6)
        bar = fig.colorbar(contour, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("critic f", fontsize=13)
    ax.scatter(real[:, 0], real[:, 1], s=4, c="tab:blue", label="real", alpha=0.6)
    ax.scatter(fake[:, 0], fake[:, 1], s=4, c="tab:orange", label="generated", alpha=0.6)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$", fontsize=14)
    ax.set_ylabel("$x_2$", fontsize=14)
    ax.tick_params(labelsize=12)
    if title:
        ax.set_title(title, fontsize=13)
    ax.legend(loc="upper right", markerscale=3, fontsize=12)
    fig.tight_layout()
    return fig


def figure_title(row: dict) -> str:
    """``step``, ``w1_exact`` and the critic's estimate of an evaluation, for a figure's title."""
    parts = [f"step {row['step']}", f"W1 {row['w1_exact']:.3f}"]
    if "critic_estimate" in row:
        parts.append(f"critic {row['critic_estimate']:.3f}")
    return "   ".join(parts)
