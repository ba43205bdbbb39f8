"""Checks on a composed config, run before anything is built or written.

Hydra itself rejects unknown keys (the composed config is in struct mode) and, through
:func:`check_group_choices`, unknown group options. Everything else is a range check here, by key
name, so a new config group gets the same checks without new code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("data", "model", "objective", "eval", "experiment")

POSITIVE_INTS = {
    "steps", "batch_size", "every", "large_n", "width", "depth", "latent_dim", "critic_steps",
    "log_every", "checkpoint_every", "n_modes", "threads", "power_iterations", "max_iter", "draws",
    "parallel_seeds",
}  # fmt: skip
NON_NEGATIVE_INTS = {"probe_every", "probe_steps"}
NULLABLE = {"threads", "probe_lr", "max_iter"}
POSITIVE_FLOATS = {"lr", "probe_lr", "std", "scale", "eps", "clip_value", "tol"}
NON_NEGATIVE_FLOATS = {"penalty_weight", "noise"}
CHOICES = {
    "device": ("cpu", "cuda"),
    "eval.solver": ("auto", "emd", "assignment"),
    "train.on_nan": ("stop", "raise"),
}


class ConfigError(ValueError):
    """A bad value in the composed config; its message is one line naming the key."""


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_choices(overrides: Iterable[str], conf_dir: Path = CONF_DIR) -> None:
    """Reject ``group=option`` overrides (sweeps included) that name no file in ``conf/<group>/``.

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
        allowed = group_options(group, conf_dir)
        for value in values:
            if value is not None and str(value) not in allowed:
                raise ConfigError(f"{group}={value} is not an option; choose one of: {', '.join(allowed)}")


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


def _leaves(node, prefix: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif not isinstance(node, list):
        yield prefix[:-1], node


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first value out of range; silent when the config is usable."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    for path, value in _leaves(plain):
        key = path.rsplit(".", 1)[-1]
        if value is None and key in NULLABLE:
            continue
        if key in POSITIVE_INTS and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            raise ConfigError(f"{path}={value!r}: must be a positive integer")
        if key in NON_NEGATIVE_INTS and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ):
            raise ConfigError(f"{path}={value!r}: must be an integer >= 0")
        if key in POSITIVE_FLOATS and not (_is_number(value) and value > 0):
            raise ConfigError(f"{path}={value!r}: must be a positive number")
        if key in NON_NEGATIVE_FLOATS and not (_is_number(value) and value >= 0):
            raise ConfigError(f"{path}={value!r}: must be a number >= 0")
    for path, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, path)
        if value is not None and str(value).split(":")[0] not in allowed:
            raise ConfigError(f"{path}={value!r}: must be one of {', '.join(allowed)}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r}: must be an integer >= 0")
    if str(cfg.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device}: CUDA is not available on this machine; use device=cpu")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
