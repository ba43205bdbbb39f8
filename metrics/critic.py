"""How a critic relates to the exact transport problem on the batches it sees.

Pure functions of tensors: no configuration, no I/O. Each key is defined by its function's formula; the
README's table "What each evaluation measures" lists them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from metrics.ot import OT_NONOPTIMAL, cost_matrix, solve

CRITIC_ESTIMATE = "critic_estimate"
CRITIC_GAP = "critic_gap"
CRITIC_REL_ERROR = "critic_rel_error"
CTRANSFORM_BOUND = "ctransform_bound"
LIPSCHITZ_MAX = "lipschitz_max"
GRAD_OT_COSINE = "grad_ot_cosine"
PROBE_ESTIMATE = "probe_estimate"
PROBE_GAP = "probe_gap"


def critic_vs_w1(f_real: torch.Tensor, f_fake: torch.Tensor, w1_exact: float) -> dict[str, float]:
    """Compare a critic's Kantorovich–Rubinstein estimate with the exact W1 of the same batches.

    .. math::
        \\hat W = \\frac1n \\sum_i f(x_i) - \\frac1m \\sum_j f(y_j), \\qquad
        \\text{gap} = \\hat W - W_1, \\qquad \\text{rel\\_error} = |\\text{gap}| / W_1

    No penalty term enters :math:`\\hat W`. For a 1-Lipschitz ``f``, :math:`\\hat W \\le W_1`
    (Kantorovich duality); a critic that is not 1-Lipschitz can exceed it.

    Parameters
    ----------
    f_real : tensor, shape (n,) or (n, 1)
        Critic values on the real batch.
    f_fake : tensor, shape (m,) or (m, 1)
        Critic values on the generated batch.
    w1_exact : float
        Exact W1 between the two batches (:func:`metrics.ot.wasserstein`).

    Returns
    -------
    dict
        Keys ``CRITIC_ESTIMATE``, ``CRITIC_GAP``, ``CRITIC_REL_ERROR``; ``rel_error`` is ``inf``
        when ``w1_exact`` is 0 and the gap is not.
    """
    estimate = float(f_real.detach().double().mean() - f_fake.detach().double().mean())
    gap = estimate - w1_exact
    if w1_exact > 0:
        rel = abs(gap) / w1_exact
    else:
        rel = 0.0 if gap == 0 else float("inf")
    return {CRITIC_ESTIMATE: estimate, CRITIC_GAP: gap, CRITIC_REL_ERROR: rel}


def input_gradients(
    fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, *, create_graph: bool = False
) -> torch.Tensor:
    """:math:`\\nabla f(p)` at each point, for a function ``fn`` applied to each sample separately.

    Parameters
    ----------
    fn : callable, ``(*, B, ...) -> (*, B)``
        Each output may depend on its own sample only (a critic; a c-transform over a fixed batch);
        leading axes (copies of a critic) are independent too.
    points : tensor, shape (*, B, ...)
    create_graph : bool
        Keep the graph, so that a loss of the gradients (a gradient penalty) can be differentiated.

    Returns
    -------
    tensor, shape of ``points``
        Detached unless ``create_graph``, in the dtype of ``points``.
    """
    with torch.enable_grad():
        points = points.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(points).sum(), points, create_graph=create_graph)
    return grad if create_graph else grad.detach()


def ctransform_bound(f_real: torch.Tensor, real, fake) -> dict[str, float]:
    """The dual value of the pair (f, f^c) on the batch: a lower bound on the exact W1.

    .. math::
        B = \\frac1n \\sum_i f(x_i) + \\frac1m \\sum_j f^c(y_j), \\qquad
        f^c(y_j) = \\min_i \\big(\\|x_i - y_j\\|_2 - f(x_i)\\big)

    :math:`f(x_i) + f^c(y_j) \\le \\|x_i - y_j\\|` for every pair, so the pair is feasible for the
    dual of the transport problem on the batch and :math:`B \\le W_1(x, y)` for *any* values
    :math:`f(x_i)`, Lipschitz or not. It needs the critic only on the real points. Computed in
    float64 on the same cost matrix as :func:`metrics.ot.wasserstein`, so the inequality holds to
    round-off.

    Parameters
    ----------
    f_real : tensor, shape (n,) or (n, 1)
        Critic values on the real batch.
    real : array or tensor, shape (n, ...)
    fake : array or tensor, shape (m, ...)

    Returns
    -------
    dict
        ``{CTRANSFORM_BOUND: B}``.

    References
    ----------
    Mallasto, Montúfar, Gerolin (2019), "How well do WGANs estimate the Wasserstein metric?",
    arXiv:1910.03875.
    """
    f = f_real.detach().double().reshape(-1).cpu().numpy()
    cost = cost_matrix(real, fake, p=1)
    if cost.shape[0] != len(f):
        raise ValueError(f"f_real has {len(f)} values for {cost.shape[0]} real points")
    f_c = (cost - f[:, None]).min(axis=0)
    return {CTRANSFORM_BOUND: float(f.mean() + f_c.mean())}


def lipschitz_max(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *, seed: int = 0
) -> dict[str, float]:
    """The largest gradient norm of the critic over real, generated and interpolated points.

    .. math::
        L = \\max_{p \\in x \\cup y \\cup \\hat x} \\|\\nabla f(p)\\|_2, \\qquad
        \\hat x_k = t_k x_k + (1 - t_k) y_k,\\; t_k \\sim U[0, 1]

    The norm is over every non-batch dimension; one interpolation weight per pair. ``L`` is a lower
    bound on the critic's Lipschitz constant: 1-Lipschitz critics give :math:`L \\le 1`.

    Parameters
    ----------
    critic : callable, ``(B, ...) -> (B,)``
    real : tensor, shape (n, ...)
    fake : tensor, shape (m, ...)
        Interpolates pair the first ``min(n, m)`` points of each.
    seed : int
        Seed of the local generator that draws the interpolation weights.

    Returns
    -------
    dict
        ``{LIPSCHITZ_MAX: L}``.
    """
    k = min(len(real), len(fake))
    gen = torch.Generator(real.device).manual_seed(seed)
    t = torch.rand(k, *([1] * (real.dim() - 1)), generator=gen, device=real.device, dtype=real.dtype)
    mixed = t * real[:k] + (1 - t) * fake[:k]
    norms = [input_gradients(critic, p).flatten(1).double().norm(dim=1) for p in (real, fake, mixed)]
    return {LIPSCHITZ_MAX: float(torch.cat(norms).max())}


def grad_ot_cosine(grad_fake: torch.Tensor, real, fake, *, solver: str = "auto") -> dict[str, float]:
    """Agreement between the critic's push on each generated point and its partner in the exact OT plan.

    .. math::
        \\cos = \\frac{1}{|J|} \\sum_{j \\in J}
            \\frac{\\langle g_j,\\, T_j - y_j \\rangle}{\\|g_j\\|\\, \\|T_j - y_j\\|}, \\qquad
        T_j = \\frac{\\sum_i P^\\star_{ij} x_i}{\\sum_i P^\\star_{ij}}

    with :math:`P^\\star` the exact W1 plan (Euclidean cost) between the batches and ``g_j`` the
    direction in which the generator's update moves :math:`y_j` (for a WGAN critic
    :math:`\\nabla f(y_j)`, since the generator minimises :math:`-f`). For equal sizes the plan is a
    permutation σ and :math:`T_j = x_{\\sigma(j)}`. ``J`` holds the points the plan moves
    (:math:`T_j \\ne y_j`); a zero gradient counts as cosine 0. An optimal 1-Lipschitz potential gives
    1: the optimal plan moves mass along rays of slope 1 of the potential.

    Parameters
    ----------
    grad_fake : tensor, shape (m, ...)
        ``g_j`` for each generated point.
    real : array or tensor, shape (n, ...)
    fake : array or tensor, shape (m, ...)
    solver : {"auto", "emd", "assignment"}
        Exact solver for the plan (:func:`metrics.ot.solve`).

    Returns
    -------
    dict
        ``{GRAD_OT_COSINE: cos, OT_NONOPTIMAL: 1 if the plan's solve stopped before optimality else
        0}``; ``cos`` in [-1, 1], NaN when the plan moves no point.
    """
    result = solve(real, fake, p=1, solver=solver)
    counted = {OT_NONOPTIMAL: int(not result.converged)}
    plan = torch.from_numpy(result.plan)
    x = torch.as_tensor(real).detach().double().reshape(plan.shape[0], -1).cpu()
    y = torch.as_tensor(fake).detach().double().reshape(plan.shape[1], -1).cpu()
    g = grad_fake.detach().double().reshape(len(y), -1).cpu()
    target = (plan.T @ x) / plan.sum(0)[:, None]
    move = target - y
    move_norm, g_norm = move.norm(dim=1), g.norm(dim=1)
    moved = move_norm > 1e-12 * (1 + y.norm(dim=1))
    if not moved.any():
        return {GRAD_OT_COSINE: float("nan")} | counted
    denom = (move_norm * g_norm)[moved]
    dots = (move * g).sum(1)[moved]
    cos = torch.where(denom > 0, dots / denom.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    return {GRAD_OT_COSINE: float(cos.clamp(-1, 1).mean())} | counted


def probe_vs_w1(f_real: torch.Tensor, f_fake: torch.Tensor, w1_exact: float) -> dict[str, float]:
    """The estimate of a critic trained further on fixed batches (the converged-critic probe).

    .. math::
        \\hat W_{\\text{probe}} = \\frac1n \\sum_i f_p(x_i) - \\frac1m \\sum_j f_p(y_j), \\qquad
        \\text{probe\\_gap} = \\hat W_{\\text{probe}} - W_1

    Parameters
    ----------
    f_real, f_fake : tensor, shape (n,) and (m,)
        The probe critic's values on the real and generated batch.
    w1_exact : float

    Returns
    -------
    dict
        ``{PROBE_ESTIMATE: estimate, PROBE_GAP: estimate − w1_exact}``.
    """
    estimate = float(f_real.detach().double().mean() - f_fake.detach().double().mean())
    return {PROBE_ESTIMATE: estimate, PROBE_GAP: estimate - w1_exact}
