"""The run folder: the names of its files and atomic writes.

A run folder holds **(contract)**:

* ``.hydra/config.yaml`` — the resolved config (and ``.hydra/overrides.yaml``);
* ``metrics.jsonl`` — one JSON object per evaluation, with ``step`` and the exact-OT keys;
* ``curves.jsonl`` — the per-batch keys that cost milliseconds, every ``eval.curve_every`` steps;
* ``summary.json`` — ``status`` (``completed``, ``diverged``, ``failed``, ``interrupted``),
  ``steps_done``, ``elapsed_s`` and ``final`` (the last evaluation's metrics);
* ``checkpoints/last.pt`` — everything needed to resume (always there once a run completed);
* ``tb/`` — TensorBoard event files, in ``tb/<run folder name>/`` (:func:`tb_dir`).

``python -m scripts.check_run_folder RUN_DIR...`` checks folders against it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

from gan.config import ConfigError

CONFIG = Path(".hydra") / "config.yaml"
OVERRIDES = Path(".hydra") / "overrides.yaml"
METRICS = "metrics.jsonl"
CURVES = "curves.jsonl"  # the cheap per-batch metrics, every eval.curve_every steps and at every evaluation
SUMMARY = "summary.json"
CHECKPOINT = Path("checkpoints") / "last.pt"
TB = "tb"
LOG = "train.log"
EVALUATIONS = "evaluations"
LOCK = ".lock"  # held by the process writing the folder (owned())
# What marks a folder as holding a run: a new run is never started in such a folder without resume=true.
RUN_FILES = (METRICS, SUMMARY, str(CHECKPOINT))
STATUSES = ("completed", "diverged", "failed", "interrupted")


# ---------------------------------------------------------------------------------------------------
# Atomic writes: a temporary file in the same folder, then a rename, so a reader (or a run killed
# mid-write) never leaves half a file.


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; run folders are shared with collaborators
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def atomic_torch_save(path: Path, obj) -> None:
    """``torch.save`` through :func:`atomic_write_bytes` (serialised in memory first: torch's own file
    writer reports a full disk as a RuntimeError without the reason)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def tb_dir(run_dir: Path) -> Path:
    """The folder of a run's TensorBoard events: ``tb/<run folder's name>``, so that TensorBoard names
    the run after its folder (a sweep job's name holds its overrides). A run that already has one keeps
    it (a folder renamed later); one written with its events in ``tb/`` itself keeps writing there."""
    tb = Path(run_dir) / TB
    if any(tb.glob("events.out.tfevents*")):
        return tb
    existing = [p for p in tb.iterdir() if p.is_dir()] if tb.is_dir() else []
    return existing[0] if len(existing) == 1 else tb / Path(run_dir).resolve().name


# ---------------------------------------------------------------------------------------------------
# One owner per run folder


class FolderInUse(ConfigError):
    """Another process holds the run folder: nothing may be written into it, not even a failure record."""


_held: dict[Path, int] = {}  # folder -> descriptor of its lock file, for the folders this process holds


@contextlib.contextmanager
def owned(*run_dirs: Path):
    """Hold an exclusive lock on each of ``run_dirs`` (``fcntl.flock`` on its ``.lock`` file) while inside.

    A second process that wants one of the folders gets a one-line :class:`gan.config.ConfigError`
    naming the process that holds it, and writes nothing. The operating system releases the lock when
    the holder ends, however it ends, so the lock of a killed run never blocks a resume. Folders this
    process already holds (the entry point locks before it loads torch, the loop again) are passed over.
    """
    taken = []
    try:
        for run_dir in map(Path, run_dirs):
            key = run_dir.resolve()
            if key in _held:
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FolderInUse(
                    f"{run_dir} is in use by process {holder}: one run folder takes one process at a time"
                ) from None
            _held[key] = fd
            taken.append(key)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        for key in taken:
            os.close(_held.pop(key))  # closing releases the lock
