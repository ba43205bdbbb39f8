"""Generators and critics. Data-derived sizes (``out_shape``, ``in_shape``) are passed in by the trainer."""

from __future__ import annotations

import math

import torch
from torch import nn


def _mlp(in_features: int, width: int, depth: int, out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width if depth else in_features, out_features))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """``z (B, latent_dim) -> sample (B, *out_shape)``: ``depth`` hidden ReLU layers of ``width`` units."""

    def __init__(self, latent_dim: int, width: int, depth: int, out_shape: tuple[int, ...]):
        super().__init__()
        self.latent_dim = latent_dim
        self.out_shape = tuple(out_shape)
        self.net = _mlp(latent_dim, width, depth, math.prod(self.out_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(len(z), *self.out_shape)


class MLPCritic(nn.Module):
    """``sample (B, *in_shape) -> score (B,)``: flattens, then ``depth`` hidden ReLU layers of ``width``."""

    def __init__(self, width: int, depth: int, in_shape: tuple[int, ...]):
        super().__init__()
        self.net = _mlp(math.prod(in_shape), width, depth, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


# ---------------------------------------------------------------------------------------------------
# DCGAN-style convolutional models (Radford et al. 2016, with the 5x5 kernels of Gulrajani et al.'s
# WGAN-GP code). Both pick their number of stride-2 stages from the image size: the smallest number
# of halvings (rounding up) that brings the larger side to at most 4 pixels, and at least two, so 8x8
# has two stages (2 -> 4 -> 8), 28x28 three (4 -> 7 -> 14 -> 28, cropping 8 to 7) and 32x32 three
# (4 -> 8 -> 16 -> 32).

_BASE = 4
_MIN_STAGES = 2


def _stage_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial sizes from the smallest to the full image: ``ceil(side / 2^k)`` for k = n, ..., 0."""
    if min(height, width) < 2**_MIN_STAGES:
        raise ValueError(f"images of {height}x{width} are too small for the DCGAN models (need sides >= 4)")
    n = _MIN_STAGES
    while max(math.ceil(height / 2**n), math.ceil(width / 2**n)) > _BASE:
        n += 1
    return [(math.ceil(height / 2**k), math.ceil(width / 2**k)) for k in range(n, -1, -1)]


def _image_shape(shape) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"the DCGAN models need (channels, height, width) samples, got shape {shape}")
    return shape


class _Crop(nn.Module):
    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.height, : self.width]


OUT_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}


class DCGANGenerator(nn.Module):
    """``z (B, latent_dim) -> image (B, C, H, W)``.

    A linear layer to ``width · 2^(n-1)`` channels at the smallest size, then ``n`` transposed
    convolutions (5x5, stride 2) that double the size (cropped where the target is odd) and halve the
    channels, the last one to ``C``. Batch norm + ReLU between stages (``batch_norm=False`` drops the
    batch norm); ``out_activation`` maps to the data's pixel range: ``tanh`` for [-1, 1], ``sigmoid``
    for [0, 1], ``none`` for anything else.
    """

    def __init__(
        self,
        latent_dim: int,
        width: int,
        out_shape: tuple[int, int, int],
        out_activation: str = "tanh",
        batch_norm: bool = True,
    ):
        super().__init__()
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(f"out_activation={out_activation!r}: must be one of {sorted(OUT_ACTIVATIONS)}")
        self.latent_dim = latent_dim
        self.out_shape = _image_shape(out_shape)
        sizes = _stage_sizes(*self.out_shape[1:])
        n = len(sizes) - 1
        channels = [width * 2 ** (n - 1 - i) for i in range(n)] + [self.out_shape[0]]
        (h0, w0) = sizes[0]
        self._start = (channels[0], h0, w0)

        def norm(c, one_d=False):
            if not batch_norm:
                return nn.Identity()
            return nn.BatchNorm1d(c) if one_d else nn.BatchNorm2d(c)

        self.project = nn.Sequential(
            nn.Linear(latent_dim, channels[0] * h0 * w0), norm(channels[0] * h0 * w0, one_d=True), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(
                nn.ConvTranspose2d(channels[i], channels[i + 1], 5, stride=2, padding=2, output_padding=1)
            )
            layers.append(_Crop(*sizes[i + 1]))
            if i < n - 1:
                layers += [norm(channels[i + 1]), nn.ReLU()]
        layers.append(OUT_ACTIVATIONS[out_activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(len(z), *self._start))


class DCGANCritic(nn.Module):
    """``image (B, C, H, W) -> score (B,)``.

    ``n`` convolutions (5x5, stride 2, padding 2: each halves the size, rounding up) from ``width``
    channels, doubling them, with leaky ReLU (slope 0.2); then one linear layer to a scalar.

    No batch norm: the gradient penalty constrains ``‖∇f(x_i)‖`` per sample, but batch norm makes
    ``f(x_i)`` depend on the other samples of the batch, so the penalised gradient would not be that of
    a function of ``x_i`` alone and the critic would not be a fixed potential (Gulrajani et al. 2017,
    Sec. 4, suggest layer norm instead). Flattened inputs (B, C·H·W) are accepted too.
    """

    def __init__(self, width: int, in_shape: tuple[int, int, int]):
        super().__init__()
        self.in_shape = _image_shape(in_shape)
        sizes = _stage_sizes(*self.in_shape[1:])
        n = len(sizes) - 1
        channels = [self.in_shape[0]] + [width * 2**i for i in range(n)]
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(channels[i], channels[i + 1], 5, stride=2, padding=2), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1] * math.prod(sizes[0]), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), *self.in_shape)
        return self.head(self.net(x).flatten(1)).squeeze(1)
