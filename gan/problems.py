"""The known-truth problems of the critic bench (``problem=``, ``conf/problem/<name>.yaml``): two
distributions whose W1 and optimal potential are known in closed form, thin configurable wrappers
around the pure functions of :mod:`metrics.known`.

``Q`` is the **real** distribution and ``P`` the **generated** one: ``sample(n, generator)`` returns
coupled pairs ``(p, q)``, each (n, dim), moved along the optimal potential's transport rays, so the
optimal critic is the known potential ``u`` and its gradient at a point of ``P`` points to that point's
partner in ``Q``. The values each key accepts are in :data:`gan.config.SCHEMA`.
"""

from __future__ import annotations

import torch

from metrics import known


class Translation:
    """``P`` uniform on ``[−box, box]^dim``, ``Q = P + m`` with ``m = shift · (1, ..., 1)/√dim``.

    ``W1 = shift`` exactly; ``u(x) = ⟨x, m⟩/‖m‖``; ``∇u = m/‖m‖``. Random probe points for
    ``lipschitz_max_box`` come from the smallest box holding both supports.
    """

    def __init__(self, dim: int, shift: float = 1.0, box: float = 1.0, device: str = "cpu"):
        self.dim, self.shift, self.box = dim, float(shift), float(box)
        self.m = known.translation_vector(self.dim, self.shift).to(device)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Coupled pairs ``(p, q)``, each (n, dim)."""
        return known.sample_translation(n, m=self.m, box=self.box, generator=generator)

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        return known.translation_potential(x, self.m)

    def grad_true(self, x: torch.Tensor) -> torch.Tensor:
        return known.translation_potential_grad(x, self.m)

    def truth(self) -> dict[str, float]:
        return known.translation_w1(self.m)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return known.translation_bounds(self.m, self.box)


class Funnels:
    """``u(x) = min_k (‖x − c_k‖ + b_k)``; ``Q`` uniform on ``[−box, box]^dim``; ``P``: each point of
    ``Q`` moved towards its active centre by a fraction ``s ~ U[move_min, move_max]`` of its distance.

    The ``n_funnels`` centres (uniform in the box) and offsets (uniform in ``[0, offset]``) are drawn
    from ``layout_seed``, not from the run's ``seed``: runs with different seeds train on the same
    problem. ``W1 = E‖q − p‖`` is estimated once, by Monte Carlo over ``mc_samples`` pairs drawn from
    the same layout generator, with its 95% interval (``w1_true_ci95``).
    """

    def __init__(
        self,
        dim: int,
        n_funnels: int = 4,
        box: float = 1.0,
        offset: float = 0.5,
        move_min: float = 0.25,
        move_max: float = 0.75,
        layout_seed: int = 0,
        mc_samples: int = 200_000,
        device: str = "cpu",
    ):
        if not 0 <= move_min <= move_max < 1:
            raise ValueError(f"move_min={move_min}, move_max={move_max}: need 0 <= move_min <= move_max < 1")
        self.dim, self.box = dim, float(box)
        self.move_min, self.move_max = float(move_min), float(move_max)
        layout_rng = torch.Generator().manual_seed(layout_seed)
        centres, offsets = known.funnel_layout(
            dim=dim, n_funnels=n_funnels, box=self.box, offset=float(offset), generator=layout_rng
        )
        self._truth = known.funnels_w1(
            centres=centres,
            offsets=offsets,
            box=self.box,
            move_min=self.move_min,
            move_max=self.move_max,
            n=mc_samples,
            generator=layout_rng,
        )
        self.centres, self.offsets = centres.to(device), offsets.to(device)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Coupled pairs ``(p, q)``, each (n, dim)."""
        p, q, _ = known.sample_funnels(
            n,
            centres=self.centres,
            offsets=self.offsets,
            box=self.box,
            move_min=self.move_min,
            move_max=self.move_max,
            generator=generator,
        )
        return p, q

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        return known.funnel_potential(x, self.centres, self.offsets)

    def grad_true(self, x: torch.Tensor) -> torch.Tensor:
        return known.funnel_potential_grad(x, self.centres, self.offsets)

    def truth(self) -> dict[str, float]:
        return dict(self._truth)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        full = torch.full((self.dim,), self.box)
        return -full, full


class KnownPotential(torch.nn.Module):
    """A problem's true potential ``u`` as a critic: the reference a trained critic is measured against."""

    def __init__(self, problem):
        super().__init__()
        self.problem = problem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.problem.potential(x.flatten(1))
