"""Training objectives behind one interface, chosen by ``objective=`` (``conf/objective/<name>.yaml``).

An objective says how many critic steps to take per generator step, builds both optimisers, and
returns the critic's and the generator's losses. Each loss method returns a dict of scalar tensors:
``"loss"`` is what gets minimised, the other entries are logged under ``loss/``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def per_sample_grad_norm(critic: nn.Module, points: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """``‖∇f(p)‖₂`` for each point, the norm taken over every non-batch dimension, shape (B,)."""
    points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=create_graph)
    return grad.flatten(1).norm(dim=1)


def random_interpolates(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``t x + (1 − t) y`` with one ``t ~ U[0, 1]`` per sample (not one for the whole batch)."""
    t = torch.rand(len(real), *([1] * (real.dim() - 1)), generator=generator, device=real.device)
    return t * real + (1 - t) * fake


class Objective:
    """Base class. Subclasses without a critic set ``uses_critic = False``."""

    name = "base"
    uses_critic = True

    def __init__(
        self,
        critic_steps: int,
        generator_optimizer: OptimizerFactory,
        critic_optimizer: OptimizerFactory | None = None,
    ):
        self.critic_steps = critic_steps if self.uses_critic else 0
        self.generator_optimizer = generator_optimizer
        self.critic_optimizer = critic_optimizer

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        """Change the critic before training (e.g. spectral normalisation); identity by default."""
        return critic

    def optimizers(self, generator: nn.Module, critic: nn.Module | None):
        opt_g = self.generator_optimizer(generator.parameters())
        opt_c = self.critic_optimizer(critic.parameters()) if self.uses_critic else None
        return opt_g, opt_c

    def critic_loss(self, critic, real, fake, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_critic_step(self, critic: nn.Module) -> None:
        """Hook run after each critic update (e.g. weight clipping); nothing by default."""

    def generator_loss(self, critic, real, fake) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class WGANGP(Objective):
    """WGAN with a two-sided gradient penalty (Gulrajani et al. 2017, "Improved Training of WGANs").

    .. math::
        L_D = \\mathbb{E} f(\\tilde x) - \\mathbb{E} f(x)
              + \\lambda\\, \\mathbb{E}(\\|\\nabla f(\\hat x)\\|_2 - 1)^2,
        \\qquad L_G = -\\mathbb{E} f(\\tilde x)

    with :math:`\\hat x = t x + (1 - t) \\tilde x`, one :math:`t \\sim U[0, 1]` per sample.
    """

    name = "wgan_gp"

    def __init__(self, critic_steps, generator_optimizer, critic_optimizer, penalty_weight: float):
        super().__init__(critic_steps, generator_optimizer, critic_optimizer)
        self.penalty_weight = penalty_weight

    def penalty(self, critic, real, fake, generator):
        norms = per_sample_grad_norm(critic, random_interpolates(real, fake, generator), create_graph=True)
        return ((norms - 1) ** 2).mean()

    def critic_loss(self, critic, real, fake, generator):
        wasserstein_term = critic(fake).mean() - critic(real).mean()
        penalty = self.penalty(critic, real, fake, generator)
        return {
            "loss": wasserstein_term + self.penalty_weight * penalty,
            "critic": wasserstein_term,
            "penalty": penalty,
        }

    def generator_loss(self, critic, real, fake):
        loss = -critic(fake).mean()
        return {"loss": loss, "generator": loss}
