"""The run folder: the names of its files and atomic writes.

A run folder holds **(contract)**:

* ``.hydra/config.yaml`` — the resolved config (and ``.hydra/overrides.yaml``);
* ``metrics.jsonl`` — one JSON object per evaluation, with ``step`` and the exact-OT keys;
* ``summary.json`` — ``status`` (``completed``, ``diverged``, ``failed``, ``interrupted``),
  ``steps_done``, ``elapsed_s`` and ``final`` (the last evaluation's metrics);
* ``checkpoints/last.pt`` — everything needed to resume (always there once a run completed);
* ``tb/`` — TensorBoard event files.

``python -m scripts.check_run_folder RUN_DIR...`` checks folders against it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

CONFIG = Path(".hydra") / "config.yaml"
OVERRIDES = Path(".hydra") / "overrides.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = Path("checkpoints") / "last.pt"
TB = "tb"
LOG = "train.log"
EVALUATIONS = "evaluations"
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
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_rows(path: Path) -> list[dict]:
    """The JSON lines of ``path`` (``metrics.jsonl``); empty when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
