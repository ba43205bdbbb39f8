"""Finished runs: a run folder's stored config and checkpoint, loaded again for ``experiments.evaluate``
and ``experiments.sample``.

Everything that can be checked without torch (the folder, the overrides, the config values, that the
checkpoint file exists) is checked first, so bad input fails fast; every failure is a one-line
:class:`gan.config.ConfigError` raised before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gan.config import CONF_DIR, ConfigError, job_dirname, validate
from gan.runfolder import CHECKPOINT as LAST_CHECKPOINT
from gan.runfolder import CONFIG as RUN_CONFIG

# Sections every training run's config has (a critic-bench run has a problem instead of data).
TRAIN_SECTIONS = ("data", "model", "objective", "eval")


def check_overrides(
    overrides: Iterable[str], *, allowed: Iterable[str] = (), eval_keys: bool = True
) -> dict[str, Any]:
    """The ``eval.<key>=value`` overrides among ``overrides`` (command-line syntax) as ``{key: value}``,
    typed as Hydra types them.

    Raises :class:`ConfigError` for a sweep, for an ``eval`` key that does not exist, and for any key
    other than ``allowed`` and (when ``eval_keys``) ``eval.*``: the model, data and objective are the
    run's own.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    known = OmegaConf.load(CONF_DIR / "eval" / "default.yaml").keys()
    allowed = tuple(allowed)
    values, refused = {}, []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        plain = not (override.package or override.is_delete() or override.is_add() or override.is_force_add())
        if not (plain and (key in allowed or (eval_keys and key.startswith("eval.")))):
            refused.append(key if plain else override.input_line)
            continue
        if override.is_sweep_override():
            raise ConfigError(f"{override.input_line}: one value per call (no sweeps)")
        if key in allowed:
            continue
        if key.removeprefix("eval.") not in known:
            raise ConfigError(f"{key} is not an evaluation setting; choose from: {', '.join(known)}")
        values[key] = override.value()
    if refused:
        accepted = [f"{k}=" for k in allowed] + (["eval.<key>="] if eval_keys else [])
        raise ConfigError(
            f"cannot change {', '.join(refused)}: only {', '.join(accepted)} are accepted "
            "(the model, data and objective are the run's own)"
        )
    return values


def read_run_config(
    run_dir: str | Path, eval_overrides: dict[str, Any] | None = None, *, device: str | None = None
) -> DictConfig:
    """The config stored in ``run_dir/.hydra/config.yaml`` with ``eval_overrides`` (``{"eval.<key>":
    value}``) and ``device`` (when not ``None``) applied, then checked (:func:`gan.config.validate`).

    Evaluation keys added to the project after the run was trained take their defaults
    (``conf/eval/default.yaml``).
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        what = "does not exist" if not run_dir.exists() else f"is not a run folder (no {RUN_CONFIG})"
        raise ConfigError(f"run={run_dir} {what}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"run={run_dir}: {RUN_CONFIG} cannot be read: {reason}") from None
    missing = [
        k for k in TRAIN_SECTIONS if not (isinstance(cfg, DictConfig) and isinstance(cfg.get(k), DictConfig))
    ]
    if missing:
        raise ConfigError(
            f"run={run_dir} is not a run folder of experiments.train (its config has no {', '.join(missing)})"
        )
    cfg.eval = OmegaConf.merge(OmegaConf.load(CONF_DIR / "eval" / "default.yaml"), cfg.eval)
    for key, value in (eval_overrides or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    if device is not None:
        cfg.device = device
    validate(cfg)
    return cfg


def checkpoint_file(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """``checkpoint`` (relative to the current folder), or else the run's ``checkpoints/last.pt``;
    the file must exist."""
    if checkpoint is None:
        path = Path(run_dir) / LAST_CHECKPOINT
        if not path.is_file():
            raise ConfigError(
                f"run={run_dir} has no {LAST_CHECKPOINT} (the run never reached a checkpoint); "
                "pass checkpoint=<file>"
            )
        return path
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint={checkpoint}: no such file")
    return path


@dataclass
class FinishedRun:
    """A run's models as they were at a checkpoint's ``step``, rebuilt from its config."""

    cfg: DictConfig
    step: int
    data: Any
    generator: Any
    critic: Any
    objective: Any
    device: Any


def load_finished_run(cfg: DictConfig, checkpoint: Path) -> FinishedRun:
    """Rebuild data, models and objective from ``cfg`` (:func:`gan.trainer.build`) and load the weights
    and the global torch random state of ``checkpoint`` (``weights_only=True``).

    The models stay in training mode, as in the training loop between its evaluations, so an evaluation
    of the result equals the one the run made at that step.
    """
    import torch

    from gan import checkpoint as ckpt
    from gan.trainer import build, seed_everything

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    state = ckpt.load(checkpoint, steps=cfg.train.steps)
    data, generator, critic, objective = build(cfg, device)
    with ckpt.fitting(f"the models of this run ({checkpoint})"):
        generator.load_state_dict(state["generator"])
        if critic is not None:
            if state.get("critic") is None:
                raise ValueError("it holds no critic")
            critic.load_state_dict(state["critic"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    return FinishedRun(cfg, int(state["step"]), data, generator, critic, objective, device)


def file_name(text: str) -> str:
    """``text`` as a file name: characters other than letters, digits and ``._=,+-`` replaced by ``_``,
    long names cut with a hash (:func:`gan.config.job_dirname`)."""
    return job_dirname(re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)).lstrip(".") or "_"
