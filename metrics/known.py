"""Transport problems whose W1, optimal potential and potential gradient are known exactly.

Pure functions of tensors: no configuration, no I/O; every random draw comes from the caller's
``torch.Generator`` and lands on that generator's device.

Each problem is a pair of distributions ``P`` and ``Q`` sampled as *coupled pairs* ``(p_i, q_i)``
drawn from an optimal transport plan between them, and a 1-Lipschitz potential ``u`` with

.. math::
    u(q) - u(p) = \\|q - p\\|_2 \\quad \\text{for every pair,} \\qquad
    W_1(P, Q) = \\mathbb{E}\\,\\|q - p\\|_2 = \\mathbb{E}_Q u - \\mathbb{E}_P u .

Sign convention, the one of ``critic_estimate = mean f(real) − mean f(fake)``: ``Q`` plays the
**real** distribution and ``P`` the **generated** one. The optimal critic is then ``f = u`` (up to a
constant), its estimate is W1, and its gradient at a point of ``P`` is the unit vector pointing to
that point's partner in ``Q``: the direction a generator update (minimising ``−f``) would move it.

* **translation**: ``P`` uniform on the box ``[−a, a]^d``, ``Q = P + m``; ``u(x) = ⟨x, m⟩/‖m‖``,
  ``∇u = m/‖m‖`` everywhere, ``W1 = ‖m‖`` exactly.
* **funnels**: ``u(x) = min_k (‖x − c_k‖ + b_k)``; ``Q`` uniform on ``[−a, a]^d``; each ``q`` is
  moved towards the centre ``c_k`` of the funnel that attains the minimum by ``t = s ‖q − c_k‖``
  with ``s ~ U[s_min, s_max]``, ``0 ≤ s_min ≤ s_max < 1``, giving ``p``. ``W1 = E[t]``, estimated by
  Monte Carlo with a 95% interval.

Why the funnel pairs are optimally coupled: moving ``q`` along the segment to its active centre
``c_k`` lowers ``u_k(x) = ‖x − c_k‖ + b_k`` by exactly ``t``, and lowers every other
``u_j`` by at most ``t`` (triangle inequality), so ``k`` still attains the minimum at ``p`` and
``u(q) − u(p) = t = ‖q − p‖``. For any coupling π of ``P`` and ``Q``, since ``u`` is 1-Lipschitz,
``∫‖x − y‖ dπ ≥ E_Q u − E_P u = E[t]``, which the pairs attain. The same argument on a finite set of
pairs shows the identity matching is an optimal assignment between ``{p_i}`` and ``{q_i}``: the exact
minibatch W1 of *paired* batches equals their mean pair distance, for every ``n``.

References
----------
Korotin, Kolesov, Burnaev (2022), "Kantorovich Strikes Back! Wasserstein GANs are not Optimal
Transport?", NeurIPS Datasets and Benchmarks (benchmark pairs with known W1 potentials).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from metrics.critic import LIPSCHITZ_MAX, input_gradients

W1_TRUE = "w1_true"
W1_TRUE_CI95 = "w1_true_ci95"
TRUE_GAP = "critic_true_gap"
TRUE_REL_ERROR = "critic_true_rel_error"
GRAD_TRUE_COSINE = "grad_true_cosine"
GRAD_ERROR = "grad_error"
LIPSCHITZ_MAX_BOX = "lipschitz_max_box"

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal

# ---------------------------------------------------------------------------------------------------
# Checks shared by both problems


def _check_box(dim: int, box: float) -> None:
    if not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1):
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not (math.isfinite(box) and box > 0):
        raise ValueError(f"box must be a positive number, got {box!r}")


def uniform_box(n: int, *, dim: int, box: float, generator: torch.Generator, dtype=torch.float32):
    """``n`` points uniform on ``[−box, box]^dim``, shape (n, dim), on ``generator``'s device."""
    _check_box(dim, box)
    u = torch.rand(n, dim, generator=generator, device=generator.device, dtype=dtype)
    return box * (2 * u - 1)


# ---------------------------------------------------------------------------------------------------
# Translation


def translation_vector(dim: int, shift: float, *, dtype=torch.float32) -> torch.Tensor:
    """The translation ``m = shift · (1, ..., 1) / √dim`` of norm ``shift``, shape (dim,)."""
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a positive number, got {shift!r}")
    _check_box(dim, 1.0)
    return torch.full((dim,), shift / math.sqrt(dim), dtype=dtype)


def sample_translation(
    n: int, *, m: torch.Tensor, box: float = 1.0, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled pairs of the translation problem.

    .. math::
        p \\sim U([-a, a]^d), \\qquad q = p + m

    Parameters
    ----------
    n : int
    m : tensor, shape (d,)
        The translation (:func:`translation_vector`).
    box : float
        Half-width ``a`` of the box ``P`` is uniform on.
    generator : torch.Generator

    Returns
    -------
    p, q : tensors, shape (n, d)
        Samples of ``P`` (generated) and of ``Q`` (real); ``q_i − p_i = m``.
    """
    p = uniform_box(n, dim=len(m), box=box, generator=generator, dtype=m.dtype)
    return p, p + m.to(p.device)


def translation_potential(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """:math:`u(x) = \\langle x, m \\rangle / \\|m\\|`, shape (B,), for ``x`` (B, d)."""
    m = m.to(x)
    return x @ (m / m.norm())


def translation_potential_grad(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla u(x) = m / \\|m\\|` at every point, shape (B, d)."""
    m = m.to(x)
    return (m / m.norm()).expand_as(x).clone()


def translation_w1(m: torch.Tensor) -> dict[str, float]:
    """:math:`W_1(P, P + m) = \\|m\\|` exactly; ``W1_TRUE_CI95`` is 0 (no Monte Carlo)."""
    return {W1_TRUE: float(m.double().norm()), W1_TRUE_CI95: 0.0}


def translation_bounds(m: torch.Tensor, box: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest box holding the supports of ``P`` and ``Q``: per-coordinate ``(low, high)``."""
    return -box + m.clamp(max=0), box + m.clamp(min=0)


# ---------------------------------------------------------------------------------------------------
# Funnels


def funnel_layout(
    *, dim: int, n_funnels: int, box: float = 1.0, offset: float = 0.0, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random funnel centres and offsets.

    .. math::
        c_k \\sim U([-a, a]^d), \\qquad b_k \\sim U[0, \\beta], \\qquad k = 1, \\dots, K

    Returns
    -------
    centres : tensor, shape (K, d), float64
    offsets : tensor, shape (K,), float64
    """
    if not (isinstance(n_funnels, int) and not isinstance(n_funnels, bool) and n_funnels >= 1):
        raise ValueError(f"n_funnels must be a positive integer, got {n_funnels!r}")
    if not (math.isfinite(offset) and offset >= 0):
        raise ValueError(f"offset must be a number >= 0, got {offset!r}")
    centres = uniform_box(n_funnels, dim=dim, box=box, generator=generator, dtype=torch.float64)
    offsets = offset * torch.rand(
        n_funnels, generator=generator, device=generator.device, dtype=torch.float64
    )
    return centres, offsets


def _funnel_terms(x: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """:math:`\\|x_i - c_k\\| + b_k`, shape (B, K), in the dtype of ``x``."""
    centres, offsets = centres.to(x), offsets.to(x)
    diff = x[:, None, :] - centres[None, :, :]
    return diff.pow(2).sum(-1).sqrt() + offsets


def funnel_index(x: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The active funnel :math:`k(x) = \\arg\\min_k (\\|x - c_k\\| + b_k)`, shape (B,), int64."""
    return _funnel_terms(x, centres, offsets).argmin(dim=1)


def funnel_potential(x: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """:math:`u(x) = \\min_k (\\|x - c_k\\|_2 + b_k)`, shape (B,), 1-Lipschitz.

    A minimum of 1-Lipschitz functions; differentiable wherever the minimum is attained once and
    ``x`` is no centre, with :math:`\\|\\nabla u\\| = 1` there (:func:`funnel_potential_grad`).
    """
    return _funnel_terms(x, centres, offsets).min(dim=1).values


def funnel_potential_grad(x: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla u(x) = (x - c_{k(x)}) / \\|x - c_{k(x)}\\|`, shape (B, d): the unit vector away
    from the active centre (zero at a centre itself)."""
    diff = x - centres.to(x)[funnel_index(x, centres, offsets)]
    norm = diff.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, diff / norm.clamp(min=torch.finfo(x.dtype).tiny), 0.0)


def _check_move(move_min: float, move_max: float) -> None:
    if not (0 <= move_min <= move_max < 1):
        raise ValueError(f"need 0 <= move_min <= move_max < 1, got move_min={move_min}, move_max={move_max}")


def sample_funnels(
    n: int,
    *,
    centres: torch.Tensor,
    offsets: torch.Tensor,
    box: float = 1.0,
    move_min: float = 0.25,
    move_max: float = 0.75,
    generator: torch.Generator,
    dtype=torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coupled pairs of the funnels problem.

    .. math::
        q \\sim U([-a, a]^d), \\quad k = k(q), \\quad s \\sim U[s_{\\min}, s_{\\max}], \\quad
        t = s\\, \\|q - c_k\\|, \\quad p = q - t\\, \\nabla u(q) = c_k + (1 - s)(q - c_k)

    Computed in float64, returned in ``dtype``. ``s < 1`` keeps ``p`` off the centre, where ``u`` has
    no gradient.

    Parameters
    ----------
    n : int
    centres, offsets : tensors, shapes (K, d) and (K,)
        From :func:`funnel_layout`.
    box : float
        Half-width ``a`` of the box ``Q`` is uniform on.
    move_min, move_max : float
        Range of the fraction ``s`` of its distance to the centre that each point moves.
    generator : torch.Generator

    Returns
    -------
    p, q : tensors, shape (n, d)
        Samples of ``P`` (generated) and ``Q`` (real).
    t : tensor, shape (n,)
        ``‖q_i − p_i‖``, the distance each pair is apart; ``W1 = E[t]``.
    """
    _check_move(move_min, move_max)
    dim = centres.shape[1]
    q = uniform_box(n, dim=dim, box=box, generator=generator, dtype=torch.float64)
    s = move_min + (move_max - move_min) * torch.rand(
        n, 1, generator=generator, device=generator.device, dtype=torch.float64
    )
    c = centres.to(q)[funnel_index(q, centres, offsets)]
    p = c + (1 - s) * (q - c)
    t = s[:, 0] * (q - c).norm(dim=1)
    return p.to(dtype), q.to(dtype), t.to(dtype)


def funnels_w1(
    *,
    centres: torch.Tensor,
    offsets: torch.Tensor,
    box: float = 1.0,
    move_min: float = 0.25,
    move_max: float = 0.75,
    n: int = 100_000,
    generator: torch.Generator,
    chunk: int = 16_384,
) -> dict[str, float]:
    """Monte Carlo estimate of :math:`W_1(P, Q) = \\mathbb{E}[t]` over the optimal coupling.

    .. math::
        \\hat W_1 = \\frac1n \\sum_i t_i, \\qquad
        \\text{ci95} = z_{0.975}\\, \\frac{\\hat\\sigma_t}{\\sqrt n}

    with :math:`t_i = \\|q_i - p_i\\|` from :func:`sample_funnels` (float64, drawn in chunks of
    ``chunk`` pairs) and :math:`\\hat\\sigma_t` the sample standard deviation (ddof 1).

    Returns
    -------
    dict
        ``{W1_TRUE: estimate, W1_TRUE_CI95: half-width of the 95% interval}``.
    """
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    total, total_sq, done = 0.0, 0.0, 0
    while done < n:
        size = min(chunk, n - done)
        *_, t = sample_funnels(
            size,
            centres=centres,
            offsets=offsets,
            box=box,
            move_min=move_min,
            move_max=move_max,
            generator=generator,
            dtype=torch.float64,
        )
        total += float(t.sum())
        total_sq += float(t.pow(2).sum())
        done += size
    mean = total / n
    var = max(total_sq - n * mean**2, 0.0) / (n - 1)
    return {W1_TRUE: mean, W1_TRUE_CI95: Z95 * math.sqrt(var / n)}


# ---------------------------------------------------------------------------------------------------
# A critic against the truth


def estimate_vs_truth(estimate: float, w1_true: float) -> dict[str, float]:
    """The critic's estimate against the true W1 of the distributions.

    .. math::
        \\text{true\\_gap} = \\hat W - W_1(P, Q), \\qquad
        \\text{true\\_rel\\_error} = |\\text{true\\_gap}| / W_1(P, Q)

    Returns
    -------
    dict
        ``{TRUE_GAP, TRUE_REL_ERROR}``; the relative error is ``inf`` when ``w1_true`` is 0 and the
        gap is not.
    """
    gap = estimate - w1_true
    rel = abs(gap) / w1_true if w1_true > 0 else (0.0 if gap == 0 else math.inf)
    return {TRUE_GAP: gap, TRUE_REL_ERROR: rel}


def grad_true_cosine(grad: torch.Tensor, grad_true: torch.Tensor) -> dict[str, float]:
    """Mean cosine between the critic's gradient and the true potential's gradient.

    .. math::
        \\cos = \\frac1n \\sum_i \\frac{\\langle g_i, g^\\star_i \\rangle}{\\|g_i\\|\\, \\|g^\\star_i\\|}

    A zero ``g_i`` (or ``g*_i``) counts as cosine 0. 1 for a critic whose gradient points along the
    true transport direction everywhere; it ignores the gradient's length.

    Parameters
    ----------
    grad, grad_true : tensors, shape (n, ...)
        Flattened over every non-batch dimension.

    Returns
    -------
    dict
        ``{GRAD_TRUE_COSINE: cos}`` in [-1, 1].
    """
    g, g_star = _pair(grad, grad_true)
    denom = g.norm(dim=1) * g_star.norm(dim=1)
    dots = (g * g_star).sum(1)
    cos = torch.where(denom > 0, dots / denom.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    return {GRAD_TRUE_COSINE: float(cos.clamp(-1, 1).mean())}


def grad_error(grad: torch.Tensor, grad_true: torch.Tensor) -> dict[str, float]:
    """Normalised squared error of the critic's gradient.

    .. math::
        \\varepsilon = \\frac{\\sum_i \\|g_i - g^\\star_i\\|^2}{\\sum_i \\|g^\\star_i\\|^2}

    For the unit-norm true gradients of both problems: 0 for the true gradient, 1 for a zero
    gradient, 2 for unit gradients orthogonal to the truth, 4 for the opposite direction. Unlike
    :func:`grad_true_cosine` it also counts a wrong length (a clipped critic's small slope).

    Returns
    -------
    dict
        ``{GRAD_ERROR: ε}``.
    """
    g, g_star = _pair(grad, grad_true)
    scale = g_star.pow(2).sum()
    if scale == 0:
        raise ValueError("grad_true is zero everywhere: the normalised error is undefined")
    return {GRAD_ERROR: float((g - g_star).pow(2).sum() / scale)}


def _pair(grad: torch.Tensor, grad_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g = grad.detach().double().flatten(1).cpu()
    g_star = grad_true.detach().double().flatten(1).cpu()
    if g.shape != g_star.shape:
        raise ValueError(
            f"grad and grad_true must have the same shape, got {tuple(g.shape)} and {tuple(g_star.shape)}"
        )
    return g, g_star


def box_points(
    n: int, *, low: torch.Tensor, high: torch.Tensor, generator: torch.Generator, dtype=torch.float32
) -> torch.Tensor:
    """``n`` points uniform on the box ``[low, high]`` (per-coordinate bounds, shape (d,)), shape (n, d)."""
    low, high = low.to(generator.device, dtype), high.to(generator.device, dtype)
    u = torch.rand(n, len(low), generator=generator, device=generator.device, dtype=dtype)
    return low + (high - low) * u


def lipschitz_max_at(
    critic: Callable[[torch.Tensor], torch.Tensor], point_sets: Sequence[torch.Tensor]
) -> dict[str, float]:
    """The largest gradient norm of ``critic`` over the given points.

    .. math::
        L = \\max_{p \\in \\cup_s S_s} \\|\\nabla f(p)\\|_2

    A lower bound on the critic's Lipschitz constant, measured where the caller asks (samples of
    both distributions, random points of a box), not only on interpolation lines as
    :func:`metrics.critic.lipschitz_max` does.

    Returns
    -------
    dict
        ``{LIPSCHITZ_MAX: L}``.
    """
    norms = [input_gradients(critic, p).flatten(1).double().norm(dim=1) for p in point_sets]
    return {LIPSCHITZ_MAX: float(torch.cat(norms).max())}
