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
