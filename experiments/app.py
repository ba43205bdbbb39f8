"""What the Hydra entry points share: one-line errors, failure records, checks before Hydra starts."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gan.config import ConfigError, check_output_dirs, validate
from gan.runfolder import FolderInUse, owned

log = logging.getLogger(__name__)

# TensorBoard's scalars at its default port, with smoothing off (its default, 0.6, shifts sparse curves).
TENSORBOARD_URL = "http://localhost:6006/#scalars&_smoothingWeight=0"


def record_failure(run_dir: str | Path, exc: Exception) -> None:
    """A job that stopped before it wrote its summary still says why, in its own folder."""
    from gan.runfolder import SUMMARY, atomic_write_json

    path = Path(run_dir) / SUMMARY
    if not path.exists():
        error = f"{type(exc).__name__}: {exc}"
        summary = {"status": "failed", "steps_done": 0, "elapsed_s": 0.0, "final": {}, "error": error}
        atomic_write_json(path, summary)


def exit_or_raise(exc: ConfigError) -> NoReturn:
    """A bad config ends a single run with one line on stderr and exit code 2; in a multirun the error is
    raised, so that the launcher records it and goes on with the other jobs."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise exc
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)


def run_job(cfg: DictConfig, load_runner: Callable[[], Callable[[DictConfig, str], dict]]) -> dict:
    """Validate ``cfg``, then run ``load_runner()(cfg, run_dir)`` in Hydra's run folder.

    ``load_runner`` imports the runner only after validation, so bad input fails without loading torch.
    A :class:`ConfigError` ends a single run with one line and exit code 2; in a multirun it is recorded
    in the job's ``summary.json`` and raised, so the launcher goes on with the other jobs. A file that
    cannot be written (a full disk, a quota) ends a single run with one line and exit code 1, after the
    run has recorded ``status: failed`` where it still could.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    # TensorBoard writes from a thread: a failed write there (a full disk) is logged in one line and
    # raised again by the run's next write, which ends the run as failed.
    threading.excepthook = lambda args: log.warning("%s stopped: %s", args.thread.name, args.exc_value)
    try:
        validate(cfg)
        with owned(Path(run_dir)):  # a second process on this folder stops here, before torch loads
            runner = load_runner()
            log.info("run folder: %s", run_dir)
            summary = runner(cfg, run_dir)  # raises ConfigError from setup, before it writes anything
    except ConfigError as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN and not isinstance(exc, FolderInUse):
            record_failure(run_dir, exc)
        exit_or_raise(exc)
    except Exception as exc:
        with contextlib.suppress(OSError):
            record_failure(run_dir, exc)
        if isinstance(exc, OSError) and hydra_cfg.mode != RunMode.MULTIRUN:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        raise
    print(
        f"run folder: {run_dir}\nsee the curves: tensorboard --logdir {run_dir}\n"
        f"then open {TENSORBOARD_URL} (smoothing off: the curves are exact values, not trends)"
    )
    return summary


def precheck(checks: Callable[[list[str]], None]) -> None:
    """Run ``checks`` (and the output-folder check) on the command line's overrides before Hydra starts,
    turning a :class:`ConfigError` into one line on stderr and exit code 2."""
    overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    try:
        check_output_dirs(overrides)
        checks(overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        pass  # malformed overrides: let Hydra report them in its own words


def one_line_errors(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a :class:`ConfigError` becomes one line on stderr and exit code 2."""
    try:
        return fn()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def quote_path_arguments(keys: Iterable[str] = ("run", "checkpoint", "out")) -> None:
    """Quote the values of ``key=<path>`` arguments in ``sys.argv`` for Hydra's override parser.

    Sweep job folders are named after their overrides (``3_objective=wgan_gp,seed=1``), and unquoted, the
    ``=`` and ``,`` of such a path are override syntax. Values already in quotes are left as they are.
    """
    keys = tuple(keys)
    for i, arg in enumerate(sys.argv[1:], start=1):
        key, sep, value = arg.partition("=")
        if sep and key in keys and value and value[0] not in "'\"":
            escaped = value.replace("'", "\\'")
            sys.argv[i] = f"{key}='{escaped}'"


def refuse_multirun(app: str) -> None:
    """Hydra's sweeps write ``multirun.yaml`` and job folders; these tools write only into the run folder."""
    if {"-m", "--multirun"} & set(sys.argv[1:]):
        print(f"error: {app} takes one run folder and one setting per call (no --multirun)", file=sys.stderr)
        sys.exit(2)
