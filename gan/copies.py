"""K copies of one network, called as one on inputs with a leading copies axis.

Training runs K ≥ 1 copies of a GAN in step (``train.parallel_seeds=K``; a single run is K = 1), so
every tensor the objectives see has a leading copies axis: batches are (K, B, ...), critic values
(K, B), losses (K,). Two classes give the same interface:

* :class:`Single` wraps one plain module (K = 1): the module itself does the arithmetic, so a single
  run computes exactly what a plain PyTorch loop would, and any module works (batch norm included);
* :class:`Stacked` holds K modules of one architecture as parameters (and buffers) stacked along a new
  leading dimension and calls them as one ``torch.func.vmap``; one optimiser over the stacked tensors
  is K optimisers, since the loss minimised is the sum of the copies' losses and Adam, RMSprop and SGD
  act elementwise.

Both hand out each copy as a plain module (:meth:`module`) for evaluation and checkpoints, and slice
or stack optimiser states, so a copy's checkpoint is exactly a single run's.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def per_copy(
    generators: list[torch.Generator], draw: Callable[[torch.Generator], torch.Tensor]
) -> torch.Tensor:
    """One draw per copy from its own random generator, in copy order, stacked: (K, ...). One copy's
    draw gets its axis as a view (no copy, and no copy in the backward pass)."""
    if len(generators) == 1:
        return draw(generators[0]).unsqueeze(0)
    return torch.stack([draw(g) for g in generators])


class Single:
    """One module as K = 1 copies: ``(1, B, ...) -> (1, B, ...)``."""

    def __init__(self, module: nn.Module):
        self.modules = [module]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # squeeze, not x[0]: a view whose gradient is a view too (indexing's allocates and copies)
        return self.modules[0](x.squeeze(0)).unsqueeze(0)

    def __len__(self) -> int:
        return 1

    def parameters(self) -> Iterator[torch.Tensor]:
        return self.modules[0].parameters()

    def module(self, k: int) -> nn.Module:
        return self.modules[k]

    def each(self, fn: Callable[[nn.Module], None]) -> None:
        """``fn`` on every copy as a plain module; what it changes in place stays."""
        fn(self.modules[0])

    def load_states(self, states: list[dict]) -> None:
        self.modules[0].load_state_dict(states[0])

    def optimizer_state(self, opt: torch.optim.Optimizer, k: int) -> dict:
        return opt.state_dict()

    def load_optimizer_states(self, opt: torch.optim.Optimizer, states: list[dict]) -> None:
        opt.load_state_dict(states[0])

    @torch.no_grad()
    def finite(self) -> list[bool]:
        return [all(bool(torch.isfinite(p).all()) for p in self.modules[0].parameters())]

    @contextlib.contextmanager
    def frozen(self):
        """No parameter gradients inside (the generator's step through the critic); input gradients flow."""
        params = list(self.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)


class Stacked(Single):
    """K modules of one architecture: parameters and buffers stacked along a new leading dimension.

    ``stacked(x)`` maps (K, B, ...) to the K modules' outputs (K, B, ...) in one ``vmap`` over
    ``functional_call``; the modules in :attr:`modules` keep their own storage and are brought up to
    date by :meth:`module` when one is handed out. A module's mode (``train``/``eval``) is read once,
    when the copies are stacked: stacked copies must not change it afterwards (no batch norm).
    """

    def __init__(self, modules: list[nn.Module]):
        self.modules = list(modules)
        params, buffers = stack_module_state(self.modules)
        self.params, self.buffers = params, buffers  # params are leaves that require grad
        template = copy.deepcopy(self.modules[0]).to("meta")  # the architecture, without storage
        self._batched = vmap(lambda p, b, x: functional_call(template, (p, b), (x,)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._batched(self.params, self.buffers, x)

    def __len__(self) -> int:
        return len(self.modules)

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(self.params.values())

    def _pairs(self, k: int):
        module = self.modules[k]
        named = dict(module.named_parameters()) | dict(module.named_buffers())
        for name, stacked in (self.params | self.buffers).items():
            yield named[name], stacked

    @torch.no_grad()
    def module(self, k: int) -> nn.Module:
        for own, stacked in self._pairs(k):
            own.copy_(stacked[k])
        return self.modules[k]

    @torch.no_grad()
    def _store(self, k: int) -> None:
        for own, stacked in self._pairs(k):
            stacked[k].copy_(own)

    def each(self, fn: Callable[[nn.Module], None]) -> None:
        for k in range(len(self)):
            fn(self.module(k))
            self._store(k)

    def load_states(self, states: list[dict]) -> None:
        for k, state in enumerate(states):
            self.modules[k].load_state_dict(state)
            self._store(k)

    def optimizer_state(self, opt: torch.optim.Optimizer, k: int) -> dict:
        """Copy ``k``'s slice of ``opt``'s state: the state of the same optimiser over copy k alone
        (per-parameter tensors sliced; scalars such as Adam's step count are shared)."""
        state, shapes = opt.state_dict(), _param_shapes(opt)
        sliced = {
            i: {key: v[k].clone() if torch.is_tensor(v) and v.shape == shapes[i] else copy.deepcopy(v)
                for key, v in entry.items()}
            for i, entry in state["state"].items()
        }  # fmt: skip
        return {"state": sliced, "param_groups": state["param_groups"]}

    def load_optimizer_states(self, opt: torch.optim.Optimizer, states: list[dict]) -> None:
        """The reverse of :meth:`optimizer_state`: the copies' states, stacked, into ``opt``."""
        shapes = [p.shape[1:] for p in self.parameters()]
        per_copy_states = [s["state"] for s in states]
        merged = {
            i: {key: torch.stack([s[i][key] for s in per_copy_states])
                if torch.is_tensor(v) and v.shape == shapes[i] else v for key, v in entry.items()}
            for i, entry in per_copy_states[0].items()
        }  # fmt: skip
        opt.load_state_dict({"state": merged, "param_groups": opt.state_dict()["param_groups"]})

    @torch.no_grad()
    def finite(self) -> list[bool]:
        ok = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.params.values()]).all(0)
        return ok.tolist()


def copies_of(modules: list[nn.Module]) -> Single:
    """:class:`Single` for one module, :class:`Stacked` for several."""
    return Single(modules[0]) if len(modules) == 1 else Stacked(modules)


def _param_shapes(opt: torch.optim.Optimizer) -> list[torch.Size]:
    return [p.shape for group in opt.param_groups for p in group["params"]]
