"""What a run writes as it goes: ``metrics.jsonl``, TensorBoard scalars and figures, and at its end
``summary.json`` and the HParams entry. One :class:`Run` per run folder."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from gan import runfolder
from gan.config import flatten

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
    # the known-truth critic bench
    "w1_true": "truth/w1_true",
    "w1_true_ci95": "truth/w1_true_ci95",
    "critic_true_gap": "truth/critic_true_gap",
    "critic_true_rel_error": "truth/critic_true_rel_error",
    "grad_true_cosine": "truth/grad_true_cosine",
    "grad_error": "truth/grad_error",
    "lipschitz_max_box": "truth/lipschitz_max_box",
}


def tb_tag(key: str) -> str:
    """The tag of a metrics key; ``<key>_ci95`` (eval.draws > 1) goes beside its mean's tag."""
    base = key.removesuffix("_ci95")
    if base != key and base in TB_TAGS:
        return f"{TB_TAGS[base]}_ci95"
    return TB_TAGS.get(key, f"eval/{key}")


def is_finite_row(row: dict) -> bool:
    return all(math.isfinite(v) for v in row.values() if isinstance(v, float))


def run_summary(*, status, steps_done, elapsed, eval_s, nonoptimal, final, error=None) -> dict:
    """The ``summary.json`` of a run folder (the contract's keys plus the time split and solver count)."""
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


RUNNING = "running"

CRITIC_VS_OT_CHART = ["critic/estimate", "ot/w1_exact", "ot/w1_real_real"]
# Every estimate of W1 on the evaluation batches beside the exact value and the noise floor.
ESTIMATES_CHART = [
    "critic/estimate",
    "critic/probe_estimate",
    "critic/ctransform_bound",
    "ot/w1_exact",
    "ot/w1_real_real",
]


def training_charts() -> dict:
    """The custom-scalars layout of a training run."""
    return {
        "critic vs exact OT": {
            "critic estimate, exact W1, real-vs-real W1 (same batches)": ["Multiline", CRITIC_VS_OT_CHART],
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


@dataclass
class Run:
    """One run folder being written, and how its run stands.

    ``overrides``: for a run folder that Hydra did not create (a copy of a parallel-seeds job), the
    command-line overrides of the equivalent single run; :meth:`open` then writes its ``.hydra/``.
    """

    dir: Path
    cfg: DictConfig
    seed: int = 0
    overrides: list[str] | None = None
    charts: dict = field(default_factory=dict)  # TensorBoard custom-scalars layout
    status: str = RUNNING
    steps_done: int = 0
    error: str | None = None
    final: dict = field(default_factory=dict)
    rows_written: int = 0
    nonoptimal: int = 0
    elapsed_before: float = 0.0  # from the checkpoint the run resumed from
    eval_before: float = 0.0
    eval_s: float = 0.0  # evaluation time in all, eval_before included
    metrics_file: TextIO | None = None
    writer: SummaryWriter | None = None

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def open(self, purge_step: int | None) -> None:
        if self.overrides is not None:
            hydra = self.dir / runfolder.CONFIG.parent
            runfolder.atomic_write_bytes(hydra / runfolder.CONFIG.name, OmegaConf.to_yaml(self.cfg).encode())
            runfolder.atomic_write_bytes(
                hydra / runfolder.OVERRIDES.name, OmegaConf.to_yaml(self.overrides).encode()
            )
        self.writer = SummaryWriter(log_dir=str(self.dir / runfolder.TB), purge_step=purge_step)
        if self.charts:
            self.writer.add_custom_scalars(self.charts)
        self.metrics_file = (self.dir / runfolder.METRICS).open("a")

    def record(self, row: dict) -> None:
        """One evaluation: a line of ``metrics.jsonl`` and a scalar per key."""
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
        self.rows_written += 1
        step = row["step"]
        for key, value in row.items():
            if key != "step":
                self.writer.add_scalar(tb_tag(key), value, step)
        if row.get("ot_nonoptimal"):
            self.nonoptimal += row["ot_nonoptimal"]
            log.warning(
                "%s step %d: %d exact OT solve(s) stopped before optimality (%d in this run)",
                self.dir.name, step, row["ot_nonoptimal"], self.nonoptimal,
            )  # fmt: skip
        self.final = row

    def log_losses(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"loss/{key}", value, step)

    def end(self, status: str, steps_done: int, error: str | None) -> None:
        """Set the outcome of a run that was still running."""
        if self.running:
            self.status, self.steps_done, self.error = status, steps_done, error

    def close(self, elapsed: float) -> dict:
        """Write ``summary.json`` and the HParams entry, close the files; returns the summary."""
        summary = run_summary(
            status=self.status, steps_done=self.steps_done, elapsed=elapsed, eval_s=self.eval_s,
            nonoptimal=self.nonoptimal, final=self.final, error=self.error,
        )  # fmt: skip
        if self.metrics_file is not None:
            self.metrics_file.close()
        runfolder.atomic_write_json(self.dir / runfolder.SUMMARY, summary)
        if self.writer is not None:
            write_hparams(self.writer, self.cfg, self.final, self.status)
            self.writer.close()
        return summary


def job_summary(copy_dirs: list[Path], *, steps_done: int) -> dict:
    """The summary of a job of several copies, from each copy's ``summary.json``: ``status``
    (``completed`` when every copy completed, else failed, interrupted or diverged, in that order of
    precedence), ``runs`` (each copy's status), ``final`` (the mean over the completed copies of their
    final metrics) and the summed times."""
    summaries = [json.loads((d / runfolder.SUMMARY).read_text()) for d in copy_dirs]
    statuses = [s["status"] for s in summaries]
    status = next((s for s in ("failed", "interrupted", "diverged") if s in statuses), "completed")
    finals = [s["final"] for s in summaries if s["status"] == "completed" and s["final"]]
    keys = [k for k in finals[0] if all(k in f for f in finals)] if finals else []
    summary = run_summary(
        status=status,
        steps_done=steps_done,
        elapsed=sum(s["elapsed_s"] for s in summaries),
        eval_s=sum(s["eval_s"] for s in summaries),
        nonoptimal=sum(s["ot_nonoptimal_total"] for s in summaries),
        final={k: finals[0][k] if k == "step" else sum(f[k] for f in finals) / len(finals) for k in keys},
    )
    runs = {d.name: s["status"] for d, s in zip(copy_dirs, summaries, strict=True)}
    return summary | {"parallel_seeds": len(summaries), "runs": runs}


# ---------------------------------------------------------------------------------------------------
# HParams


def flat_hparams(cfg: DictConfig) -> dict[str, float | int | str | bool]:
    """The resolved config as ``{"a.b.c": scalar}``; lists become strings, Hydra's own keys and keys
    starting with ``_`` are left out."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    out = {}
    for key, value in flatten(container).items():
        if any(part.startswith("_") for part in key.split(".")) or value is None:
            continue
        out[key] = value if isinstance(value, bool | int | float | str) else str(value)
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
