"""Datasets. Every set exposes:

* ``shape``: the shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``;
* ``sample(n, generator)``: ``n`` training samples drawn with the caller's ``torch.Generator``
  (on that generator's device);
* ``sample_heldout(n, generator)``: ``n`` samples the generator never trains on, for quality metrics;
* ``modes``, ``std``: the mixture's centres and spread where the set is a Gaussian mixture, else ``None``.

Toy sets are sampled on the fly, so a seed fixes every batch and held-out samples are simply fresh ones.
"""

from __future__ import annotations

import math

import torch


class MixtureOfGaussians:
    """Equal-weight mixture of isotropic Gaussians in 2D.

    ``layout="ring"``: ``n_modes`` centres on a circle of radius ``scale`` (8 Gaussians of the WGAN-GP
    paper with ``scale=2, std=0.02``). ``layout="grid"``: a square grid of ``n_modes`` centres spaced
    ``scale`` apart around 0 (25 Gaussians with ``scale=2, std=0.05``).
    """

    shape = (2,)

    def __init__(self, layout: str, n_modes: int, scale: float, std: float):
        if layout == "ring":
            angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
            modes = scale * torch.stack([angles.cos(), angles.sin()], dim=1)
        elif layout == "grid":
            side = math.isqrt(n_modes)
            if side * side != n_modes:
                raise ValueError(f"data.n_modes={n_modes}: a grid needs a square number of modes")
            axis = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * scale
            modes = torch.cartesian_prod(axis, axis)
        else:
            raise ValueError(f"data.layout={layout!r}: must be one of ['ring', 'grid']")
        self.modes = modes.float()
        self.std = float(std)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        which = torch.randint(len(self.modes), (n,), generator=generator, device=device)
        noise = torch.randn(n, 2, generator=generator, device=device)
        return self.modes.to(device)[which] + self.std * noise

    sample_heldout = sample  # an infinite set: fresh samples are held out


class SwissRoll:
    """2D Swiss roll: ``t = 1.5π (1 + 2u)``, point ``t (cos t, sin t) / scale`` plus Gaussian noise.

    With ``noise=0.25, scale=7.5`` this is the set of the WGAN-GP paper's toy experiments.
    """

    shape = (2,)
    modes = None
    std = None

    def __init__(self, noise: float, scale: float):
        self.noise = float(noise)
        self.scale = float(scale)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, device=device))
        roll = torch.stack([t * t.cos(), t * t.sin()], dim=1)
        roll = roll + self.noise * torch.randn(n, 2, generator=generator, device=device)
        return roll / self.scale

    sample_heldout = sample
