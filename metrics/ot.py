"""Exact optimal transport between two point clouds with uniform weights.

Everything here is a pure function of its inputs: no configuration, no I/O, no global state.
Values are computed in float64 on the CPU (inputs on another device are copied there first).

Two exact solvers are used:

* ``"emd"``: POT's network simplex (:func:`ot.emd`), any sizes ``n`` and ``m``. Its iteration cap
  is raised with the problem size and its result code is read: a non-optimal solve is reported
  through a warning *and* through the ``converged`` field (``OT_NONOPTIMAL`` in the dicts below),
  never silently. A capped solve returns the plan the simplex had reached when it stopped: it need
  not be feasible (its marginals can be off), so its value can lie on *either* side of the optimum
  (below it early on: 0.19 and 0.40 after 10 and 50 iterations against 0.56 for 64 points in 2-D;
  above it once the plan is feasible but not yet optimal: 0.60 after 200).
* ``"assignment"``: scipy's :func:`~scipy.optimize.linear_sum_assignment`, exact with no cap for
  uniform weights on equal-size clouds (the optimal plan of that LP is a permutation, Birkhoff).

``"auto"`` picks the faster one for the case at hand (see ``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment

W1_EXACT = "w1_exact"
W2_EXACT = "w2_exact"
OT_NONOPTIMAL = "ot_nonoptimal"
OT_CAPPED = "ot_capped"  # a loss's flag per step and copy: its exact solve stopped before optimality

SOLVERS = ("auto", "emd", "assignment")

# POT's result codes (ot/lp/emd_wrap.pyx): 1 optimal, 0 infeasible, 2 unbounded, 3 iteration cap reached.
_POT_OPTIMAL = 1


@dataclass(frozen=True)
class Transport:
    """The solution of one exact transport problem.

    Attributes
    ----------
    cost : float
        :math:`\\sum_{ij} P_{ij} C_{ij}`, with :math:`C_{ij} = \\|x_i - y_j\\|^p`, i.e. :math:`W_p^p`.
    plan : numpy.ndarray, shape (n, m)
        The optimal coupling :math:`P`; rows sum to ``1/n``, columns to ``1/m``.
    converged : bool
        False when the solver stopped before optimality (POT's iteration cap, infeasibility).
    solver : str
        ``"emd"`` or ``"assignment"``.
    """

    cost: float
    plan: np.ndarray
    converged: bool
    solver: str


def _as_float64(a) -> torch.Tensor:
    t = torch.as_tensor(a)
    t = t.detach().to(device="cpu", dtype=torch.float64)
    return t.reshape(t.shape[0], -1)


def cost_matrix(x, y, *, p: int = 1) -> np.ndarray:
    """Ground cost :math:`C_{ij} = \\|x_i - y_j\\|_2^p` in float64, shape (n, m).

    Samples are flattened: (n, C, H, W) images are compared as vectors of C·H·W pixels.

    For ``d <= 16`` the differences are formed explicitly (exact zeros on the diagonal of a cloud
    against itself). Above that, the matrix-product form ``|x|² + |y|² − 2 x·y`` is used: 5–10× faster
    at d = 784 and its absolute error on a squared distance is about ``1e-16 (|x|² + |y|²)``.
    """
    x, y = _as_float64(x), _as_float64(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {x.shape[1]} and {y.shape[1]}")
    mode = "donot_use_mm_for_euclid_dist" if x.shape[1] <= 16 else "use_mm_for_euclid_dist"
    dist = torch.cdist(x, y, compute_mode=mode).numpy()
    return dist if p == 1 else dist**p


def default_max_iter(n: int, m: int) -> int:
    """The network simplex's iteration cap for an n x m problem: ``max(100_000, 50 n m)``."""
    return max(100_000, 50 * n * m)


def _pick_solver(solver: str, n: int, m: int, d: int) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "auto":
        # Measured on 2 CPU cores (scripts/bench.py): the network simplex wins in low dimension,
        # where costs have many near-ties; the assignment solver wins for image-sized d.
        return "assignment" if n == m and d > 16 else "emd"
    if solver == "assignment" and n != m:
        raise ValueError(f"the assignment solver needs equal sizes, got n={n}, m={m}")
    return solver


def solve(x, y, *, p: int = 1, solver: str = "auto", max_iter: int | None = None) -> Transport:
    """Solve the exact OT problem between the uniform empirical measures on ``x`` and ``y``.

    .. math::
        \\min_{P \\in U(1_n/n,\\, 1_m/m)} \\sum_{ij} P_{ij} \\|x_i - y_j\\|^p

    Parameters
    ----------
    x : array or tensor, shape (n, ...)
    y : array or tensor, shape (m, ...)
        Samples; every dimension after the first is flattened.
    p : int
        Exponent of the Euclidean ground cost (1 for W1, 2 for W2²).
    solver : {"auto", "emd", "assignment"}
    max_iter : int, optional
        Iteration cap of POT's network simplex; by default ``max(100_000, 50 n m)`` (POT's own
        default of 100,000 stops early from n = 2048 on; see the module docstring for what a capped
        solve returns).

    Returns
    -------
    Transport
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    return _solve_cost(cost_matrix(x, y, p=p), _as_float64(x).shape[1], solver=solver, max_iter=max_iter)


def _solve_cost(cost: np.ndarray, d: int, *, solver: str, max_iter: int | None) -> Transport:
    """:func:`solve` on a ground-cost matrix already built from ``d``-dimensional points."""
    n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError(f"both clouds need at least one point, got n={n}, m={m}")
    kind = _pick_solver(solver, n, m, d)
    if kind == "assignment":
        rows, cols = linear_sum_assignment(cost)
        plan = np.zeros((n, m))
        plan[rows, cols] = 1.0 / n
        return Transport(float(cost[rows, cols].mean()), plan, True, kind)

    max_iter = default_max_iter(n, m) if max_iter is None else max_iter
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    # POT warns itself when the cap is hit; its warning is left to reach the user.
    plan, log = ot.emd(a, b, cost, numItermax=max_iter, log=True)
    converged = log["result_code"] == _POT_OPTIMAL
    if not converged:
        warnings.warn(
            f"exact OT ({n}x{m}) did not reach optimality: {log['warning']}; "
            f"raise max_iter (now {max_iter}) or use solver='assignment' for equal sizes",
            RuntimeWarning,
            stacklevel=2,
        )
    return Transport(float(np.sum(plan * cost)), plan, bool(converged), kind)


def wasserstein(x, y, p: int = 1, *, solver: str = "auto", max_iter: int | None = None) -> float:
    """Exact Wasserstein-p distance between uniform point clouds, Euclidean ground metric.

    .. math::
        W_p(x, y) = \\Big(\\min_{P \\in U(1_n/n,\\, 1_m/m)} \\sum_{ij} P_{ij} \\|x_i - y_j\\|^p\\Big)^{1/p}

    Parameters
    ----------
    x : array or tensor, shape (n, ...)
    y : array or tensor, shape (m, ...)
    p : int
        1 for W1 (Euclidean cost, not POT's default squared cost), 2 for W2.

    Returns
    -------
    float
    """
    return solve(x, y, p=p, solver=solver, max_iter=max_iter).cost ** (1.0 / p)


def wasserstein_counted(x, y, *, key: str, p: int = 1, solver: str = "auto") -> dict[str, float]:
    """:func:`wasserstein` as a metric: ``{key: W_p(x, y), OT_NONOPTIMAL: 1 if the solve stopped before
    optimality else 0}``."""
    result = solve(x, y, p=p, solver=solver)
    return {key: result.cost ** (1.0 / p), OT_NONOPTIMAL: int(not result.converged)}


def batch_distances(x, y, *, solver: str = "auto") -> dict[str, float]:
    """Exact W1 and W2 between two minibatches, with the number of non-optimal solves.

    Returns
    -------
    dict
        ``{W1_EXACT: W1(x, y), W2_EXACT: W2(x, y), OT_NONOPTIMAL: count of the two solves that
        stopped before optimality}``.
    """
    distances = cost_matrix(x, y, p=1)  # built once: the W2 cost is its square
    d = _as_float64(x).shape[1]
    w1 = _solve_cost(distances, d, solver=solver, max_iter=None)
    w2 = _solve_cost(distances**2, d, solver=solver, max_iter=None)
    return {
        W1_EXACT: w1.cost,
        W2_EXACT: w2.cost**0.5,
        OT_NONOPTIMAL: int(not w1.converged) + int(not w2.converged),
    }


def torch_cost_matrix(x: torch.Tensor, y: torch.Tensor, *, p: int = 1) -> torch.Tensor:
    """Differentiable ground cost :math:`C_{ij} = \\|x_i - y_j\\|_2^p` in the inputs' dtype, shape (*, n, m).

    For losses that need gradients through the cost (unlike :func:`cost_matrix`, which is float64
    NumPy for exact solvers). The squared distance is clamped at the smallest positive float before the
    square root: :math:`\\sqrt{\\cdot}` has an infinite derivative at 0, and without the clamp a pair
    of coincident points would give NaN gradients. For ``d <= 16`` the differences are formed
    explicitly; above, the ``|x|² + |y|² − 2 x·y`` form keeps memory at O(n m) instead of O(n m d), with
    an absolute error on a squared distance of about ``ε (|x|² + |y|²)`` for the dtype's ``ε``: pass
    float64 where that matters (in float32, 784-pixel images are up to 1e-2 away from themselves).

    Parameters
    ----------
    x : tensor, shape (*, n, d)
    y : tensor, shape (*, m, d)
        Flattened samples; leading axes (copies) are batched.
    p : int
        1 for the W1 cost, 2 for the squared Euclidean cost (no square root, no clamp).

    Returns
    -------
    tensor, shape (*, n, m)
    """
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x and y must have the same number of features, got {x.shape[-1]} and {y.shape[-1]}"
        )
    if x.shape[-1] <= 16:
        sq = (x[..., :, None, :] - y[..., None, :, :]).pow(2).sum(-1)
    else:
        sq = x.pow(2).sum(-1)[..., :, None] + y.pow(2).sum(-1)[..., None, :] - 2 * x @ y.transpose(-1, -2)
    if p == 2:
        return sq.clamp(min=0)
    dist = sq.clamp(min=torch.finfo(sq.dtype).tiny).sqrt()
    return dist if p == 1 else dist**p


def w1_differentiable(x: torch.Tensor, y: torch.Tensor, *, max_iter: int | None = None):
    """Exact W1 between uniform point clouds, differentiable in ``x`` and ``y`` (POT's torch backend).

    .. math::
        W_1(x, y) = \\min_{P \\in U(1_n/n,\\, 1_m/m)} \\sum_{ij} P_{ij} \\|x_i - y_j\\|_2,
        \\qquad \\frac{\\partial W_1}{\\partial C_{ij}} = P^\\star_{ij}

    :func:`ot.emd2` solves the problem on a float64 copy on the CPU and attaches the optimal plan as
    the gradient of the cost matrix; autograd carries it through :func:`torch_cost_matrix` (square
    root clamped at 0) to the points. Where the optimal plan is unique this is the exact gradient.

    Parameters
    ----------
    x : tensor, shape (n, ...)
    y : tensor, shape (m, ...)
    max_iter : int, optional
        Iteration cap of the network simplex; by default ``max(100_000, 50 n m)`` as in :func:`solve`.

    Returns
    -------
    value : tensor, shape ()
        W1 in the dtype and on the device of ``x``.
    converged : bool
        False when POT stopped before optimality (a ``RuntimeWarning`` is emitted too).

    See Also
    --------
    wasserstein : the same value, without gradients, with a choice of solver.
    """
    cost = torch_cost_matrix(x.double().flatten(1), y.double().flatten(1), p=1)
    n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError(f"both clouds need at least one point, got n={n}, m={m}")
    max_iter = default_max_iter(n, m) if max_iter is None else max_iter
    a = torch.full((n,), 1.0 / n, dtype=torch.float64, device=cost.device)
    b = torch.full((m,), 1.0 / m, dtype=torch.float64, device=cost.device)
    value, log = ot.emd2(a, b, cost, numItermax=max_iter, log=True)
    converged = log["result_code"] == _POT_OPTIMAL
    if not converged:
        warnings.warn(
            f"exact OT ({n}x{m}) did not reach optimality: {log['warning']}; raise max_iter (now {max_iter})",
            RuntimeWarning,
            stacklevel=2,
        )
    return value.to(x.dtype), bool(converged)


def _entropic_ot(cost: torch.Tensor, eps: float, max_iter: int, tol: float) -> torch.Tensor:
    # Envelope theorem: at the Sinkhorn fixed point the gradient of the value in the cost is the plan,
    # so no gradient is taken through the iterations.
    res = ot.solve(cost, reg=eps, reg_type="KL", max_iter=max_iter, tol=tol, grad="envelope")
    return res.value


def sinkhorn_divergence(
    x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.1, p: int = 1, max_iter: int = 1000, tol: float = 1e-6
) -> torch.Tensor:
    """Debiased Sinkhorn divergence between uniform point clouds, differentiable in ``x`` and ``y``.

    .. math::
        S_\\varepsilon(x, y) = \\mathrm{OT}_\\varepsilon(x, y)
            - \\tfrac12 \\mathrm{OT}_\\varepsilon(x, x) - \\tfrac12 \\mathrm{OT}_\\varepsilon(y, y),
        \\qquad \\mathrm{OT}_\\varepsilon(x, y) = \\min_{P \\in U(1_n/n,\\, 1_m/m)}
            \\sum_{ij} P_{ij} \\|x_i - y_j\\|^p + \\varepsilon\\, \\mathrm{KL}(P \\,\\|\\, 1_n 1_m^\\top / nm)

    :math:`S_\\varepsilon \\ge 0`, it is 0 only for equal clouds, and it tends to :math:`W_p^p` as
    :math:`\\varepsilon \\to 0`. Each term is solved by POT's log-domain Sinkhorn (:func:`ot.solve`)
    in float64; POT warns when it stops at ``max_iter`` before the marginal error reaches ``tol``.

    Parameters
    ----------
    x : tensor, shape (n, ...)
    y : tensor, shape (m, ...)
    eps : float
        Entropic regularisation, in units of the cost.
    p : int
        Exponent of the Euclidean ground cost (1: the W1 cost).
    max_iter : int
    tol : float
        Stopping threshold on the marginal violation.

    Returns
    -------
    tensor, shape ()
        In the dtype and on the device of ``x``.

    References
    ----------
    Genevay, Peyré, Cuturi (2018), "Learning Generative Models with Sinkhorn Divergences", AISTATS.
    Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré (2019), "Interpolating between Optimal Transport
    and MMD using Sinkhorn Divergences", AISTATS.
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    xd, yd = x.double().flatten(1), y.double().flatten(1)
    pairs = ((xd, yd), (xd, xd), (yd, yd))
    xy, xx, yy = (_entropic_ot(torch_cost_matrix(a, b, p=p), eps, max_iter, tol) for a, b in pairs)
    return (xy - 0.5 * xx - 0.5 * yy).to(x.dtype)
