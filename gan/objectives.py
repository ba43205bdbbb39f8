"""Training objectives behind one interface, chosen by ``objective=`` (``conf/objective/<name>.yaml``).

An objective says how many critic steps to take per generator step, builds both optimisers, and
returns the critic's and the generator's losses. Every tensor has a leading copies axis
(:mod:`gan.copies`): batches are (K, B, ...), a critic maps them to (K, B), and each loss is (K,), one
per copy, so the same formulas train one run (K = 1) or K seeds at once. Each loss method returns a
dict: ``"loss"`` is what gets minimised (the sum over copies), the other entries are logged under
``loss/``.

| name | class | critic |
|---|---|---|
| ``wgan_gp`` | :class:`WGANGP` | two-sided gradient penalty |
| ``wgan_clip`` | :class:`WGANClip` | weight clipping |
| ``wgan_lp`` | :class:`WGANLP` | one-sided gradient penalty |
| ``wgan_sn`` | :class:`WGANSN` | spectral normalisation |
| ``ctransform`` | :class:`CTransform` | f on real points, its c-transform on generated ones |
| ``c_eps`` | :class:`CEpsTransform` | the same with the entropic (soft-min) c-transform |
| ``exact_ot`` | :class:`ExactOT` | none: exact minibatch W1 |
| ``sinkhorn`` | :class:`Sinkhorn` | none: debiased Sinkhorn divergence |
| ``ns_gan`` | :class:`NSGAN` | logistic discriminator, non-saturating loss |
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from gan.copies import per_copy
from metrics.critic import input_gradients
from metrics.ot import OT_CAPPED, sinkhorn_divergence, torch_cost_matrix, w1_differentiable

OptimizerFactory = Callable[..., torch.optim.Optimizer]
Critic = Callable[[torch.Tensor], torch.Tensor]  # (K, B, ...) -> (K, B): gan.copies.Single or Stacked


def gradient_norms(critic: Critic, points: torch.Tensor) -> torch.Tensor:
    """``‖∇f(p)‖₂`` for each copy and point, the norm over every sample dimension, shape (K, B), with the
    graph kept for a penalty. The copies are independent, so the gradient of the sum over all of them
    gives each copy's own input gradients."""
    return input_gradients(critic, points, create_graph=True).flatten(2).norm(dim=2)


def random_interpolates(real: torch.Tensor, fake: torch.Tensor, rngs: list[torch.Generator]) -> torch.Tensor:
    """``t x + (1 − t) y`` with one ``t ~ U[0, 1]`` per sample (not one for the whole batch), each copy's
    weights drawn from its own generator in ``rngs``; ``real`` and ``fake`` are (K, B, ...)."""
    shape = (real.shape[1],) + (1,) * (real.dim() - 2)
    t = per_copy(rngs, lambda g: torch.rand(shape, generator=g, device=real.device))
    return t * real + (1 - t) * fake


def minimise(opt: torch.optim.Optimizer, losses: dict[str, torch.Tensor]) -> None:
    """One optimiser step on the sum over copies of ``losses["loss"]``."""
    opt.zero_grad(set_to_none=True)
    losses["loss"].sum().backward()
    opt.step()


class Objective:
    """Base class. Subclasses without a critic set ``uses_critic = False``; those whose critic is meant
    to estimate W1 set ``estimates_w1 = True``."""

    name = "base"
    uses_critic = True
    estimates_w1 = False

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

    def critic_loss(self, critic, real, fake, rngs: list[torch.Generator]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_critic_step(self, critic) -> None:
        """Hook run after each critic update on the copies (e.g. weight clipping); nothing by default."""

    def critic_step(self, critic, opt, real, fake, rngs) -> dict[str, torch.Tensor]:
        """One update of the critic copies on ``real`` and ``fake``; returns the losses."""
        losses = self.critic_loss(critic, real, fake, rngs)
        minimise(opt, losses)
        self.after_critic_step(critic)
        return losses

    def generator_loss(self, critic, real, fake) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def critic_values(self, critic, real, fake) -> tuple[torch.Tensor, torch.Tensor]:
        """The critic's values on the real and on the generated batches, shapes (K, n) and (K, m).

        Their mean difference is the critic's estimate of W1 (no penalty term), and the gradient of
        the second in ``fake`` is the direction the generator's update moves each generated point.
        ``f(x)`` and ``f(y)`` by default; objectives whose critic acts differently on generated
        points (the c-transform) override it.
        """
        return critic(real), critic(fake)


def wasserstein_term(critic, real, fake) -> torch.Tensor:
    """``mean f(y) − mean f(x)`` per copy: the critic minimises it, i.e. maximises its estimate of W1."""
    return critic(fake).mean(1) - critic(real).mean(1)


def wasserstein_generator_loss(critic, fake) -> dict[str, torch.Tensor]:
    """``−mean f(y)`` per copy: the generator's loss against every WGAN critic."""
    loss = -critic(fake).mean(1)
    return {"loss": loss, "generator": loss}


class WGANGP(Objective):
    """WGAN with a two-sided gradient penalty (Gulrajani et al. 2017, "Improved Training of WGANs").

    .. math::
        L_D = \\mathbb{E} f(\\tilde x) - \\mathbb{E} f(x)
              + \\lambda\\, \\mathbb{E}(\\|\\nabla f(\\hat x)\\|_2 - 1)^2,
        \\qquad L_G = -\\mathbb{E} f(\\tilde x)

    with :math:`\\hat x = t x + (1 - t) \\tilde x`, one :math:`t \\sim U[0, 1]` per sample.
    """

    name = "wgan_gp"
    estimates_w1 = True

    def __init__(self, critic_steps, generator_optimizer, critic_optimizer, penalty_weight: float):
        super().__init__(critic_steps, generator_optimizer, critic_optimizer)
        self.penalty_weight = penalty_weight

    def penalty(self, norms: torch.Tensor) -> torch.Tensor:
        """Per copy, from the gradient norms at the interpolates (K, B)."""
        return ((norms - 1) ** 2).mean(1)

    def critic_loss(self, critic, real, fake, rngs):
        term = wasserstein_term(critic, real, fake)
        penalty = self.penalty(gradient_norms(critic, random_interpolates(real, fake, rngs)))
        return {
            "loss": term + self.penalty_weight * penalty,
            "critic": term,
            "penalty": penalty,
        }

    def generator_loss(self, critic, real, fake):
        return wasserstein_generator_loss(critic, fake)


class WGANLP(WGANGP):
    """WGAN with a one-sided (Lipschitz) penalty (Petzka, Fischer, Lukovnikov 2018, "On the
    regularization of Wasserstein GANs").

    .. math::
        L_D = \\mathbb{E} f(\\tilde x) - \\mathbb{E} f(x)
              + \\lambda\\, \\mathbb{E} \\max(0, \\|\\nabla f(\\hat x)\\|_2 - 1)^2,
        \\qquad L_G = -\\mathbb{E} f(\\tilde x)

    Only gradients steeper than 1 are penalised: a 1-Lipschitz critic pays nothing, whereas the
    two-sided penalty also pulls flat regions towards slope 1.
    """

    name = "wgan_lp"

    def penalty(self, norms):
        return F.relu(norms - 1).pow(2).mean(1)


class WGANClip(Objective):
    """WGAN with weight clipping (Arjovsky, Chintala, Bottou 2017, "Wasserstein GAN", Algorithm 1).

    .. math::
        L_D = \\mathbb{E} f(\\tilde x) - \\mathbb{E} f(x), \\qquad L_G = -\\mathbb{E} f(\\tilde x),
        \\qquad w \\leftarrow \\mathrm{clip}(w, -c, c) \\text{ after each critic step}

    Clipping bounds the Lipschitz constant by some constant that depends on ``c`` and the
    architecture, not by 1: the estimate is W1 times an unknown scale.
    """

    name = "wgan_clip"
    estimates_w1 = True

    def __init__(self, critic_steps, generator_optimizer, critic_optimizer, clip_value: float):
        super().__init__(critic_steps, generator_optimizer, critic_optimizer)
        self.clip_value = clip_value

    def critic_loss(self, critic, real, fake, rngs):
        term = wasserstein_term(critic, real, fake)
        return {"loss": term, "critic": term}

    @torch.no_grad()
    def after_critic_step(self, critic):
        for param in critic.parameters():  # elementwise: the stacked tensors of all copies at once
            param.clamp_(-self.clip_value, self.clip_value)

    def generator_loss(self, critic, real, fake):
        return wasserstein_generator_loss(critic, fake)


class WGANSN(Objective):
    """WGAN loss with a spectrally normalised critic (Miyato, Kataoka, Koyama, Yoshida 2018,
    "Spectral Normalization for Generative Adversarial Networks").

    Every weight ``W`` of two or more dimensions (linear and convolution layers) is replaced by
    :math:`W / \\hat\\sigma(W)`, with :math:`\\hat\\sigma` from ``power_iterations`` steps of power
    iteration per critic update (``torch.nn.utils.parametrizations.spectral_norm``). An MLP with
    1-Lipschitz activations is then at most 1-Lipschitz (up to the power-iteration error). For a
    convolution the normalised matrix is the reshaped kernel, whose spectral norm does **not** bound
    the convolution's Lipschitz constant: on image models read ``lipschitz_max`` instead of assuming 1.

    Power iteration runs only in :meth:`after_critic_step`: one iteration on the updated weights after
    each critic update, so every later forward pass divides by an estimate that has seen the current
    weights. Elsewhere the critic is kept in ``eval()`` mode, where torch's parametrisation reads the
    stored singular vectors without updating them: the critic loss, the generator step, evaluations
    and plots all use the same normalised weights and change no state.
    """

    name = "wgan_sn"
    estimates_w1 = True

    def __init__(self, critic_steps, generator_optimizer, critic_optimizer, power_iterations: int = 1):
        super().__init__(critic_steps, generator_optimizer, critic_optimizer)
        self.power_iterations = power_iterations

    def prepare_critic(self, critic: nn.Module) -> nn.Module:
        for module in list(critic.modules()):
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and weight.dim() >= 2:
                spectral_norm(module, n_power_iterations=self.power_iterations)
        return critic.eval()

    def critic_loss(self, critic, real, fake, rngs):
        term = wasserstein_term(critic, real, fake)
        return {"loss": term, "critic": term}

    def after_critic_step(self, critic):
        critic.each(power_iteration)

    def generator_loss(self, critic, real, fake):
        return wasserstein_generator_loss(critic, fake)


@torch.no_grad()
def power_iteration(critic: nn.Module) -> None:
    """One step of power iteration on every spectrally normalised weight of ``critic`` (a plain module,
    kept in ``eval()`` mode otherwise)."""
    critic.train()
    try:
        for module in critic.modules():
            if parametrize.is_parametrized(module, "weight"):
                _ = module.weight  # in train mode, computing the weight runs the power iteration
    finally:
        critic.eval()


def c_transform(f_real: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """:math:`f^c(y_j) = \\min_i (C_{ij} - f(x_i))`, shape (..., m), for ``f_real`` (..., n) and
    ``cost`` (..., n, m)."""
    return (cost - f_real[..., :, None]).min(dim=-2).values


def soft_c_transform(f_real: torch.Tensor, cost: torch.Tensor, eps: float) -> torch.Tensor:
    """The entropic c-transform, shape (..., m): a soft-min over the real points at temperature ``eps``.

    .. math::
        f^{c,\\varepsilon}(y_j) = -\\varepsilon \\log \\frac1n \\sum_i
            \\exp\\Big(\\frac{f(x_i) - C_{ij}}{\\varepsilon}\\Big)

    It lies in :math:`[f^c(y_j),\\, f^c(y_j) + \\varepsilon \\log n]` and tends to
    :math:`f^c(y_j) = \\min_i (C_{ij} - f(x_i))` as :math:`\\varepsilon \\to 0` (the minus signs make
    it a soft *min* of :math:`C_{ij} - f(x_i)`; with either sign flipped it would tend to a max).
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    n = f_real.shape[-1]
    return -eps * (torch.logsumexp((f_real[..., :, None] - cost) / eps, dim=-2) - math.log(n))


class CTransform(Objective):
    """c-transform WGAN (Mallasto, Montúfar, Gerolin 2019, "How well do WGANs estimate the
    Wasserstein metric?").

    The critic ``f`` is evaluated on the real batch only; on the generated batch its c-transform over
    the real batch takes its place, so no Lipschitz constraint is needed (``f^c`` is 1-Lipschitz by
    construction and ``f(x_i) + f^c(y_j) <= ‖x_i − y_j‖``):

    .. math::
        L_D = -\\Big(\\frac1n \\sum_i f(x_i) + \\frac1m \\sum_j f^c(y_j)\\Big), \\qquad
        L_G = \\frac1m \\sum_j f^c(y_j)

    with :math:`f^c(y_j) = \\min_i (\\|x_i - y_j\\|_2 - f(x_i))`. The generator's gradient flows
    through the cost; ``f(x)`` does not depend on the generator. :meth:`critic_values` returns
    :math:`(f(x), -f^c(y))`, so ``critic_estimate`` is the dual value this objective maximises.
    """

    name = "ctransform"
    estimates_w1 = True

    def transform(self, f_real: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        return c_transform(f_real, cost)

    def _c_transform(self, f_real, real, fake) -> torch.Tensor:
        """f^c on the generated points, (K, m): the costs in float64 (in float32 the distance of an image
        to itself comes out as up to 1e-2), the result in the critic's dtype."""
        cost = torch_cost_matrix(real.flatten(2).double(), fake.flatten(2).double(), p=1)
        return self.transform(f_real.double(), cost).to(f_real.dtype)

    def _dual(self, critic, real, fake):
        f_real = critic(real)
        return f_real, self._c_transform(f_real, real, fake)

    def critic_loss(self, critic, real, fake, rngs):
        f_real, f_c = self._dual(critic, real, fake)
        loss = -(f_real.mean(1) + f_c.mean(1))
        return {"loss": loss, "critic": loss}

    def generator_loss(self, critic, real, fake):
        f_real = critic(real).detach()
        f_c = self._c_transform(f_real, real, fake)
        return {"loss": f_c.mean(1), "generator": f_real.mean(1) + f_c.mean(1)}

    def critic_values(self, critic, real, fake):
        f_real, f_c = self._dual(critic, real, fake)
        return f_real, -f_c


class CEpsTransform(CTransform):
    """(c, ε)-transform WGAN: :class:`CTransform` with the entropic c-transform
    :func:`soft_c_transform` at temperature ``eps`` (Mallasto, Montúfar, Gerolin 2019).

    The pair :math:`(f, f^{c,\\varepsilon})` can violate the constraint by up to
    :math:`\\varepsilon \\log n`, so its dual value may exceed W1 by as much.
    """

    name = "c_eps"

    def __init__(self, critic_steps, generator_optimizer, critic_optimizer, eps: float):
        super().__init__(critic_steps, generator_optimizer, critic_optimizer)
        self.eps = eps

    def transform(self, f_real, cost):
        return soft_c_transform(f_real, cost, self.eps)


class NSGAN(Objective):
    """Non-saturating GAN with a logistic discriminator (Goodfellow et al. 2014, "Generative
    Adversarial Nets", Section 3), the non-Wasserstein baseline. ``D = σ(f)`` with ``f`` the critic's
    logit:

    .. math::
        L_D = \\mathbb{E} \\log(1 + e^{-f(x)}) + \\mathbb{E} \\log(1 + e^{f(\\tilde x)}), \\qquad
        L_G = \\mathbb{E} \\log(1 + e^{-f(\\tilde x)})

    Its ``critic_estimate`` (mean logit difference) is logged like any critic's but estimates no W1.
    """

    name = "ns_gan"

    def critic_loss(self, critic, real, fake, rngs):
        loss = F.softplus(-critic(real)).mean(1) + F.softplus(critic(fake)).mean(1)
        return {"loss": loss, "critic": loss}

    def generator_loss(self, critic, real, fake):
        loss = F.softplus(-critic(fake)).mean(1)
        return {"loss": loss, "generator": loss}


class ExactOT(Objective):
    """No critic: the generator minimises the exact minibatch W1 (a control in Stanczuk et al. 2021,
    "Wasserstein GANs work because they fail (to approximate the Wasserstein distance)").

    .. math::
        L_G = W_1(x, \\tilde x) = \\min_{P} \\sum_{ij} P_{ij} \\|x_i - \\tilde x_j\\|_2

    solved exactly by POT's network simplex; its gradient is the optimal plan pulled back through the
    Euclidean cost (:func:`metrics.ot.w1_differentiable`).
    """

    name = "exact_ot"
    uses_critic = False

    def __init__(self, generator_optimizer, max_iter: int | None = None):
        super().__init__(0, generator_optimizer, None)
        self.max_iter = max_iter

    def generator_loss(self, critic, real, fake):
        w1, capped = [], []
        for x, y in zip(real, fake, strict=True):  # one exact solve per copy
            value, converged = w1_differentiable(x, y, max_iter=self.max_iter)
            w1.append(value)
            capped.append(float(not converged))
        w1 = torch.stack(w1)
        return {"loss": w1, "w1": w1.detach(), OT_CAPPED: torch.tensor(capped)}


class Sinkhorn(Objective):
    """No critic: the generator minimises the debiased Sinkhorn divergence with the Euclidean cost
    (Genevay, Peyré, Cuturi 2018; Feydy et al. 2019), :func:`metrics.ot.sinkhorn_divergence`.

    .. math::
        L_G = \\mathrm{OT}_\\varepsilon(x, \\tilde x) - \\tfrac12 \\mathrm{OT}_\\varepsilon(x, x)
              - \\tfrac12 \\mathrm{OT}_\\varepsilon(\\tilde x, \\tilde x)
    """

    name = "sinkhorn"
    uses_critic = False

    def __init__(self, generator_optimizer, eps: float, max_iter: int = 1000, tol: float = 1e-4):
        super().__init__(0, generator_optimizer, None)
        self.eps, self.max_iter, self.tol = eps, max_iter, tol

    def generator_loss(self, critic, real, fake):
        loss = torch.stack([
            sinkhorn_divergence(x, y, eps=self.eps, p=1, max_iter=self.max_iter, tol=self.tol)
            for x, y in zip(real, fake, strict=True)
        ])  # fmt: skip
        return {"loss": loss, "sinkhorn": loss.detach()}
