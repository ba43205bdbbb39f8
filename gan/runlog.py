"""The run folder: atomic JSON files, the metrics log, and TensorBoard summaries."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

log = logging.getLogger(__name__)

# Stable TensorBoard tags for the metrics.jsonl keys; any other key goes under "eval/".
TB_TAGS = {
    "w1_exact": "ot/w1_exact",
    "w2_exact": "ot/w2_exact",
    "w1_real_real": "ot/w1_real_real",
    "ot_nonoptimal": "ot/nonoptimal_solves",
    "critic_estimate": "critic/estimate",
    "critic_gap": "critic/gap",
    "critic_rel_error": "critic/rel_error",
    "ctransform_bound": "critic/ctransform_bound",
    "lipschitz_max": "critic/lipschitz_max",
    "grad_ot_cosine": "critic/grad_ot_cosine",
    "probe_estimate": "critic/probe_estimate",
    "probe_gap": "critic/probe_gap",
    "modes_covered": "quality/modes_covered",
    "high_quality_frac": "quality/high_quality_frac",
    "w1_large": "quality/w1_large",
    "fid": "quality/fid",
    "kid_mean": "quality/kid_mean",
    "kid_std": "quality/kid_std",
    "precision": "quality/precision",
    "recall": "quality/recall",
    "label_entropy": "quality/label_entropy",
    "classes_covered": "quality/classes_covered",
    "prediction_entropy": "quality/prediction_entropy",
    "fid_inception": "quality/fid_inception",
}

CRITIC_VS_OT_CHART = ["critic/estimate", "ot/w1_exact", "ot/w1_real_real"]
# Every estimate of W1 on the evaluation batches beside the exact value and the noise floor.
ESTIMATES_CHART = [
    "critic/estimate",
    "critic/probe_estimate",
    "critic/ctransform_bound",
    "ot/w1_exact",
    "ot/w1_real_real",
]


def tb_tag(key: str) -> str:
    """The tag of a metrics key; ``<key>_ci95`` (eval.draws > 1) goes beside its mean's tag."""
    base = key.removesuffix("_ci95")
    if base != key and base in TB_TAGS:
        return f"{TB_TAGS[base]}_ci95"
    return TB_TAGS.get(key, f"eval/{key}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_finite_row(row: dict) -> bool:
    return all(math.isfinite(v) for v in row.values() if isinstance(v, float))


def run_summary(*, status, steps_done, elapsed, eval_s, nonoptimal, final, error=None) -> dict:
    """The ``summary.json`` of a run folder (DESIGN.md's contract plus the time split and solver count)."""
    summary = {
        "status": status,
        "steps_done": steps_done,
        "elapsed_s": round(elapsed, 3),
        "train_s": round(elapsed - eval_s, 3),
        "eval_s": round(eval_s, 3),
        "ot_nonoptimal_total": nonoptimal,
        "final": final,
    }
    if status == "diverged":
        summary["diverged_at_step"] = steps_done
    if error:
        summary["error"] = error
    return summary


def close_run(
    run_dir: Path, writer: SummaryWriter, cfg: DictConfig, *, status, steps_done, elapsed, eval_s,
    nonoptimal, final, error, saved: bool,
) -> dict:  # fmt: skip
    """The end of a run, whatever stopped it: the log line, ``summary.json``, the HParams entry; closes
    ``writer`` and returns the summary (:func:`run_summary`). ``saved``: a checkpoint was just written."""
    summary = run_summary(
        status=status, steps_done=steps_done, elapsed=elapsed, eval_s=eval_s, nonoptimal=nonoptimal,
        final=final, error=error,
    )  # fmt: skip
    note = "checkpoint saved" if saved else "no new checkpoint"
    log.info("%s after %d steps in %.1fs (evaluation %.1fs); %s", status, steps_done, elapsed, eval_s, note)
    atomic_write_json(run_dir / "summary.json", summary)
    write_hparams(writer, cfg, final, status)
    writer.close()
    return summary


def open_writer(run_dir: Path, purge_step: int | None = None) -> SummaryWriter:
    writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)
    writer.add_custom_scalars(
        {
            "critic vs exact OT": {
                "critic estimate, exact W1, real-vs-real W1 (same batches)": [
                    "Multiline",
                    CRITIC_VS_OT_CHART,
                ],
                "W1 and W2 on the evaluation batches": ["Multiline", ["ot/w1_exact", "ot/w2_exact"]],
                "critic estimate, probe estimate, c-transform bound, exact W1, real-vs-real W1": [
                    "Multiline",
                    ESTIMATES_CHART,
                ],
                "critic gradient: largest norm and agreement with the OT plan": [
                    "Multiline",
                    ["critic/lipschitz_max", "critic/grad_ot_cosine"],
                ],
            },
            "quality": {
                "large-sample W1 to held-out real data": ["Multiline", ["quality/w1_large"]],
                "FID and KID (classifier features)": ["Multiline", ["quality/fid", "quality/kid_mean"]],
                "precision and recall": ["Multiline", ["quality/precision", "quality/recall"]],
            },
        }
    )
    return writer


def flat_hparams(cfg: DictConfig) -> dict[str, float | int | str | bool]:
    """The resolved config as ``{"a.b.c": scalar}``; lists become strings, Hydra's own keys are left out."""
    out: dict = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                if not str(key).startswith("_"):
                    walk(value, f"{prefix}{key}.")
        elif isinstance(node, bool | int | float | str):
            out[prefix[:-1]] = node
        elif node is not None:
            out[prefix[:-1]] = str(node)

    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    walk(container, "")
    return out


def write_hparams(writer: SummaryWriter, cfg: DictConfig, final: dict, status: str) -> None:
    """HParams plugin summaries in the run's own folder (``add_hparams`` would open a new sub-run).

    The metric values are the scalars already logged under the same tags, so the table shows the final ones.
    """
    params = flat_hparams(cfg)
    params["status"] = status
    metrics = {tb_tag(k): v for k, v in final.items() if k != "step" and isinstance(v, int | float)}
    experiment, session_start, session_end = hparams(params, metrics)
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)
