"""What each config key accepts, for every entry point, and the checks run before anything is built.

Hydra itself rejects unknown keys (the composed config is in struct mode) and, through
:func:`check_group_choices`, unknown group options. :data:`SCHEMA` states the values each key accepts;
:func:`validate` applies it (and :data:`RELATIONS`) to a composed config and raises a one-line
:class:`ConfigError` naming the first bad key. Keys not in the schema take any value their code accepts.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("data", "model", "objective", "eval", "experiment", "problem")
SOLVERS = ("auto", "emd", "assignment")  # metrics.ot.SOLVERS, without importing torch


class ConfigError(ValueError):
    """A bad value in the composed config; its message is one line naming the key."""


# ---------------------------------------------------------------------------------------------------
# The schema


@dataclass(frozen=True)
class Accepts:
    """A key's accepted values: ``test(value)`` is true, or the value is None where ``nullable``."""

    test: Callable[[Any], bool]
    wording: str
    nullable: bool = False

    def check(self, key: str, value) -> None:
        if value is None and self.nullable:
            return
        if not self.test(value):
            raise ConfigError(f"{key}={value!r}: must be {self.wording}")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, *, nullable: bool = False, why: str = "") -> Accepts:
    wording = "a positive integer" if low == 1 else f"an integer >= {low}"
    return Accepts(lambda v: _int(v) and v >= low, wording + why, nullable)


def number(*, above=None, at_least=None, below=None, nullable: bool = False) -> Accepts:
    """A finite number in the range the bounds give (``above``, ``at_least``: exclusive, inclusive)."""
    low = f"{above:g} <" if above is not None else f"{at_least:g} <=" if at_least is not None else ""
    if below is not None:
        wording = f"a number with {low} x < {below:g}"
    else:
        wording = "a positive number" if above == 0 else f"a finite number >= {at_least:g}"

    def test(v) -> bool:
        return (
            _number(v)
            and (above is None or v > above)
            and (at_least is None or v >= at_least)
            and (below is None or v < below)
        )

    return Accepts(test, wording, nullable)


def one_of(*options) -> Accepts:
    return Accepts(lambda v: v in options, "one of " + ", ".join(map(str, options)))


def int_list(low: int = 1) -> Accepts:
    return Accepts(
        lambda v: isinstance(v, list) and len(v) > 0 and all(_int(n) and n >= low for n in v),
        "a non-empty list of positive integers",
    )


POSITIVE_INT = integer(1)
POSITIVE = number(above=0)
NON_NEGATIVE = number(at_least=0)
FRACTION = number(above=0, below=1)

# Dotted key -> accepted values; ``*`` stands for one level (``model.*.width``: generator and critic).
SCHEMA: dict[str, Accepts] = {
    "seed": integer(0),
    "device": Accepts(
        lambda v: isinstance(v, str) and v.split(":")[0] in ("cpu", "cuda"), "one of cpu, cuda"
    ),
    "resume": Accepts(lambda v: isinstance(v, bool), "true or false"),
    # train.yaml, critic_bench.yaml
    "train.steps": POSITIVE_INT,
    "train.batch_size": POSITIVE_INT,
    "train.log_every": POSITIVE_INT,
    "train.checkpoint_every": POSITIVE_INT,
    "train.on_nan": one_of("stop", "raise"),
    "train.threads": integer(1, nullable=True),
    "train.parallel_seeds": POSITIVE_INT,
    # eval/
    "eval.every": POSITIVE_INT,
    "eval.curve_every": integer(0),
    "eval.batch_size": POSITIVE_INT,
    "eval.large_n": POSITIVE_INT,
    "eval.solver": one_of(*SOLVERS),
    "eval.probe_every": integer(0),
    "eval.probe_steps": integer(0),
    "eval.probe_lr": number(above=0, nullable=True),
    "eval.draws": POSITIVE_INT,
    "eval.box_points": POSITIVE_INT,
    # data/
    "data.layout": one_of("ring", "grid"),
    "data.n_modes": POSITIVE_INT,
    "data.scale": POSITIVE,
    "data.std": POSITIVE,
    "data.noise": NON_NEGATIVE,
    "data.channels": one_of(1, 3),
    "data.size": integer(4),
    "data.heldout_fraction": FRACTION,
    "data.split_seed": integer(0),
    "data.download_timeout": POSITIVE,
    # model/
    "model.latent_dim": POSITIVE_INT,
    "model.*.width": POSITIVE_INT,
    "model.*.depth": POSITIVE_INT,
    "model.*.out_activation": one_of("tanh", "sigmoid", "none"),
    # objective/
    "objective.critic_steps": POSITIVE_INT,
    "objective.*_optimizer.lr": POSITIVE,
    "objective.penalty_weight": NON_NEGATIVE,
    "objective.clip_value": POSITIVE,
    "objective.power_iterations": POSITIVE_INT,
    "objective.eps": POSITIVE,
    "objective.max_iter": integer(1, nullable=True),
    "objective.tol": POSITIVE,
    # problem/ (critic_bench.yaml)
    "problem.dim": POSITIVE_INT,
    "problem.shift": POSITIVE,
    "problem.box": POSITIVE,
    "problem.n_funnels": POSITIVE_INT,
    "problem.offset": NON_NEGATIVE,
    "problem.move_min": number(at_least=0, below=1),
    "problem.move_max": FRACTION,
    "problem.layout_seed": integer(0),
    "problem.mc_samples": integer(2),
}

# Entry points whose root keys differ from training's.
BATCH_BIAS = {
    "batch_sizes": int_list(),
    "draws": integer(2, why=" (a standard deviation needs two)"),
    "shift": NON_NEGATIVE,
    "solver": one_of(*SOLVERS),
}
CENTROIDS = {
    "batch_sizes": int_list(),
    "draws": integer(2, why=" (a standard deviation needs two)"),
    "reference": one_of("heldout", "train"),
    "kmeans.n_init": POSITIVE_INT,
    "kmeans.max_iter": POSITIVE_INT,
    "kmeans.tol": NON_NEGATIVE,
    "solver": one_of(*SOLVERS),
    "figure_images": POSITIVE_INT,
}
SAMPLE = {"n": POSITIVE_INT, "seed": integer(0, nullable=True)}

# Checks between keys: (keys, test on their values, what is needed). Skipped where a key is absent.
RELATIONS = [
    (
        ("data.low", "data.high"),
        lambda low, high: _number(low) and _number(high) and low < high,
        "low < high",
    ),
    (("problem.move_min", "problem.move_max"), lambda lo, hi: lo <= hi, "move_min <= move_max"),
]


def flatten(node, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b.c": value}``; lists and other values are leaves."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out |= flatten(value, path) if isinstance(value, dict) and value else {path: value}
    return out


def validate(cfg: DictConfig, schema: dict[str, Accepts] | None = None) -> None:
    """Raise :class:`ConfigError` on the first value :data:`SCHEMA` (updated with ``schema``, an entry
    point's own keys) or :data:`RELATIONS` refuse; silent when the config is usable."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    values = flatten(plain)
    rules = SCHEMA | (schema or {})
    for key, value in values.items():
        for pattern, accepts in rules.items():
            if fnmatch.fnmatchcase(key, pattern) and key.count(".") == pattern.count("."):
                accepts.check(key, value)
    for keys, test, needed in RELATIONS:
        if all(k in values for k in keys) and not test(*(values[k] for k in keys)):
            shown = ", ".join(f"{k}={values[k]!r}" for k in keys)
            raise ConfigError(f"{shown}: need {needed}")
    if str(values.get("device", "cpu")).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={values['device']}: CUDA is not available on this machine; use device=cpu"
            )


def instantiate_or_fail(node, what: str, **kwargs):
    """``hydra.utils.instantiate`` whose failures become one-line :class:`ConfigError` s naming ``what``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, ConfigError):
            raise cause from None
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(f"{what} cannot be built: {reason}") from None


# ---------------------------------------------------------------------------------------------------
# The command line, before Hydra starts


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_choices(
    overrides: Iterable[str], conf_dir: Path = CONF_DIR, *, allowed: dict[str, list[str]] | None = None
) -> None:
    """Reject ``group=option`` overrides (sweeps included) that name no file in ``conf/<group>/``, or
    none of ``allowed[group]`` where an entry point takes only some.

    Hydra reports this too, over several lines; this gives the one-line error before any folder exists.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    for override in parsed:
        group = override.key_or_group
        if group not in GROUPS or override.is_delete() or override.package:
            continue
        values = (
            list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        )
        options = (allowed or {}).get(group) or group_options(group, conf_dir)
        where = " here" if allowed and group in allowed else ""
        for value in values:
            if value is not None and str(value) not in options:
                raise ConfigError(
                    f"{group}={value} is not an option{where}; choose one of: {', '.join(options)}"
                )


def check_output_dirs(overrides: Iterable[str]) -> None:
    """Reject a ``hydra.run.dir`` / ``hydra.sweep.dir`` that cannot be created or written, before Hydra
    tries (its own error is a traceback)."""
    import os

    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+~") not in ("hydra.run.dir", "hydra.sweep.dir") or not value or "${" in value:
            continue
        path = Path(value).absolute()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}={value}: cannot write there ({existing} is not a writable folder)")


def job_dirname(override_dirname: str, *, max_bytes: int = 200) -> str:
    """A sweep job's folder name from its overrides: ``/`` replaced (it would nest folders) and long names
    cut with a hash of the whole, so every name stays unique and under the 255-byte file-name limit."""
    import hashlib

    name = override_dirname.replace("/", "_") or "defaults"
    raw = name.encode()
    if len(raw) > max_bytes:
        cut = raw[: max_bytes - 11].decode(errors="ignore")
        name = f"{cut}_{hashlib.sha1(raw).hexdigest()[:10]}"
    return name
