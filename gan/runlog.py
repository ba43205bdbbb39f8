"""What a run writes as it goes: ``metrics.jsonl`` and ``curves.jsonl``, TensorBoard scalars and
figures, and at its end ``summary.json`` and the HParams entry. One :class:`Run` per run folder.

TensorBoard: every key under a stable tag (:data:`TB_TAGS`); the critic's estimate, the exact W1 and
the real-vs-real W1 also as three runs of their own under one tag (:data:`COMPARE_TAG`), so that
TensorBoard draws them in three colours with a legend; a custom-scalars layout holding only charts
whose tags the run writes; HParams whose first columns are the objective, data, model and preset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from gan import runfolder
from gan.config import CONF_DIR, flatten

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

# The keys that cost milliseconds (one or two exact solves on evaluation batches and the critic's values):
# logged every eval.curve_every steps as well as at every evaluation.
CURVE_KEYS = (
    "w1_exact",
    "w1_real_real",
    "critic_estimate",
    "critic_gap",
    "critic_rel_error",
    "ot_nonoptimal",
)
# Each its own TensorBoard run (tb/<run>/<key>) writing COMPARE_TAG: one chart, three colours, a legend.
COMPARED = ("critic_estimate", "w1_exact", "w1_real_real")
COMPARE_TAG = "compare/critic_estimate_vs_exact_w1_vs_real_real_w1"
# With eval.draws > 1: the 95% interval of these as a custom-scalars Margin chart.
MARGINS = ("critic_estimate", "w1_exact")
# First among an HParams table's metrics.
HPARAMS_METRICS_FIRST = ("critic_estimate", "w1_exact", "w1_real_real", "critic_gap", "critic_rel_error")


def training_charts() -> dict:
    """The custom-scalars layout of a training run, before it is cut to the tags the run writes."""
    margins = {f"{key} with its 95% interval (eval.draws)": ["Margin", margin_tags(key)] for key in MARGINS}
    return {
        "critic vs exact OT": {
            "critic estimate, exact W1, real-vs-real W1 (same batches)": ["Multiline", [COMPARE_TAG]],
            "W1 and W2 on the evaluation batches": ["Multiline", ["ot/w1_exact", "ot/w2_exact"]],
            "critic estimate, probe estimate, c-transform bound": [
                "Multiline", ["critic/estimate", "critic/probe_estimate", "critic/ctransform_bound"]
            ],
            "critic gradient: largest norm and agreement with the OT plan": [
                "Multiline", ["critic/lipschitz_max", "critic/grad_ot_cosine"]
            ],
            **margins,
        },
        "quality": {
            "large-sample W1 to held-out real data": ["Multiline", ["quality/w1_large"]],
            "modes covered and high-quality samples": [
                "Multiline", ["quality/modes_covered", "quality/high_quality_frac"]
            ],
            "FID and KID (classifier features)": ["Multiline", ["quality/fid", "quality/kid_mean"]],
            "precision and recall": ["Multiline", ["quality/precision", "quality/recall"]],
        },
    }  # fmt: skip


def margin_tags(key: str) -> list[str]:
    """``[value, lower, upper]`` tags of ``key``'s Margin chart."""
    return [tb_tag(key), f"{tb_tag(key)}_lower", f"{tb_tag(key)}_upper"]


def written_charts(charts: dict, tags: set[str]) -> dict:
    """``charts`` with only the tags in ``tags``, and without the charts and categories left empty (a
    Margin chart needs all three of its tags)."""
    out = {}
    for category, entries in charts.items():
        kept = {}
        for title, (kind, chart_tags) in entries.items():
            present = [t for t in chart_tags if t in tags]
            if present and (kind != "Margin" or present == chart_tags):
                kept[title] = [kind, present]
        if kept:
            out[category] = kept
    return out


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
    nonoptimal: int = 0  # exact solves that stopped before optimality: evaluations and losses
    capped: int = 0  # of which in the training loss (objective=exact_ot)
    elapsed_before: float = 0.0  # from the checkpoint the run resumed from
    eval_before: float = 0.0
    eval_s: float = 0.0  # evaluation time in all, eval_before included
    choices: dict = field(default_factory=dict)  # Hydra's group choices, for HParams
    compared: tuple = COMPARED  # keys drawn on one chart in colours of their own (COMPARE_TAG)
    metrics_file: TextIO | None = None
    curves_file: TextIO | None = None
    writer: SummaryWriter | None = None
    series: dict[str, SummaryWriter] = field(default_factory=dict)  # COMPARED, one run each
    tags: set[str] = field(default_factory=set)  # written so far: the custom-scalars layout lists these

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
        tb = runfolder.tb_dir(self.dir)
        self.writer = SummaryWriter(log_dir=str(tb), purge_step=purge_step)
        self.series = {
            key: SummaryWriter(log_dir=str(tb / key), purge_step=purge_step) for key in self.compared
        }
        self.metrics_file = (self.dir / runfolder.METRICS).open("a")
        self.curves_file = (self.dir / runfolder.CURVES).open("a")

    def _scalars(self, values: dict, step: int) -> None:
        for key, value in values.items():
            if key != "step":
                self._scalar(self.writer, tb_tag(key), value, step)
            if key in self.series:
                self._scalar(self.series[key], COMPARE_TAG, value, step)
            if key in MARGINS and f"{key}_ci95" in values:
                _, lower, upper = margin_tags(key)
                self._scalar(self.writer, lower, value - values[f"{key}_ci95"], step)
                self._scalar(self.writer, upper, value + values[f"{key}_ci95"], step)

    def _scalar(self, writer: SummaryWriter, tag: str, value, step: int) -> None:
        writer.add_scalar(tag, value, step)
        self.tags.add(tag)

    def _curve_line(self, values: dict) -> None:
        self.curves_file.write(
            json.dumps({k: values[k] for k in ("step", *CURVE_KEYS) if k in values}) + "\n"
        )
        self.curves_file.flush()

    def record(self, row: dict) -> None:
        """One evaluation: a line of ``metrics.jsonl`` and of ``curves.jsonl``, a scalar per key; after the
        first, the custom-scalars layout of the charts whose tags were written."""
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
        self._curve_line(row)
        self.rows_written += 1
        step = row["step"]
        self._scalars(row, step)
        if not self.final:  # the first evaluation of this process
            self.writer.add_custom_scalars(written_charts(self.charts, self.tags))
        if row.get("ot_nonoptimal"):
            self.nonoptimal += row["ot_nonoptimal"]
            log.warning(
                "%s step %d: %d exact OT solve(s) stopped before optimality (%d in this run)",
                self.dir.name, step, row["ot_nonoptimal"], self.nonoptimal,
            )  # fmt: skip
        self.final = row

    def record_curve(self, point: dict) -> None:
        """The cheap per-batch keys between evaluations: a line of ``curves.jsonl`` and their scalars."""
        self._curve_line(point)
        self._scalars(point, point["step"])
        if point.get("ot_nonoptimal"):
            self.nonoptimal += point["ot_nonoptimal"]

    def count_capped(self, capped: float, step: int) -> None:
        """Count a training step whose loss came from an exact solve that stopped before optimality."""
        if capped and self.running:
            self.capped += 1
            self.nonoptimal += 1
            log.warning(
                "%s step %d: the exact OT solve of the loss stopped before optimality", self.dir.name, step
            )

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
        for file in (self.metrics_file, self.curves_file):
            if file is not None:
                with contextlib.suppress(OSError):  # a full disk: the summary still says why the run failed
                    file.close()
        runfolder.atomic_write_json(self.dir / runfolder.SUMMARY, summary)
        if self.writer is not None:
            write_hparams(self.writer, self.cfg, self.choices, self.final, self.status)
            for writer in (self.writer, *self.series.values()):
                writer.close()
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


GROUP_CHOICES = ("objective", "data", "model", "experiment", "problem")
HPARAMS_STATUS = {
    "completed": api_pb2.STATUS_SUCCESS,
    "diverged": api_pb2.STATUS_FAILURE,
    "failed": api_pb2.STATUS_FAILURE,
    "interrupted": api_pb2.STATUS_UNKNOWN,  # resumable: neither success nor failure
}


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """The option chosen in each config group: Hydra's record of them in a Hydra job, else (a run
    started from Python) the file of ``conf/<group>/`` whose settings the config holds unchanged."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        chosen = HydraConfig.get().runtime.choices
        return {
            g: str(chosen[g]) if chosen.get(g) is not None else "null" for g in GROUP_CHOICES if g in chosen
        }
    out = {}
    for group in GROUP_CHOICES:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        mine = flatten(OmegaConf.to_container(node, resolve=True))
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            option = flatten(OmegaConf.to_container(OmegaConf.load(path)))
            if all(mine.get(k) == v for k, v in option.items() if not (isinstance(v, str) and "${" in v)):
                out[group] = path.stem
                break
        else:
            out[group] = str(node.get("_target_", "custom")).rsplit(".", 1)[-1]
    return out


def flat_hparams(cfg: DictConfig, choices: dict[str, str]) -> dict[str, float | int | str | bool]:
    """The HParams of a run: the group choices first, then the resolved config's scalar keys
    (``a.b.c``); booleans stay booleans, null becomes ``"null"``, lists become strings, Hydra's own keys
    and keys starting with ``_`` are left out."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    out: dict = dict(choices)
    for key, value in flatten(container).items():
        if any(part.startswith("_") for part in key.split(".")):
            continue
        out[key] = (
            "null" if value is None else value if isinstance(value, bool | int | float | str) else str(value)
        )
    return out


def write_hparams(writer: SummaryWriter, cfg: DictConfig, choices: dict, final: dict, status: str) -> None:
    """The HParams plugin's three summaries (experiment, session start, session end) in the run's own
    folder, built from the plugin's protocol buffers (torch's ``add_hparams`` opens a new sub-run and
    writes booleans as numbers; TensorBoard's own helpers need TensorFlow).

    The metrics are the scalars already logged under the same tags, so the table shows the final
    values; the critic's estimate and the W1 keys come first."""
    params = flat_hparams(cfg, choices) | {"status": status}
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    infos = []
    for key, value in params.items():
        if isinstance(value, bool):
            start.hparams[key].bool_value, kind = value, api_pb2.DATA_TYPE_BOOL
        elif isinstance(value, str):
            start.hparams[key].string_value, kind = value, api_pb2.DATA_TYPE_STRING
        else:
            start.hparams[key].number_value, kind = value, api_pb2.DATA_TYPE_FLOAT64
        # TensorBoard lists the hparams that differ between runs first: the group choices are those.
        infos.append(api_pb2.HParamInfo(name=key, type=kind, differs=key in choices))
    keys = [k for k in final if k != "step" and isinstance(final[k], int | float)]
    keys.sort(key=lambda k: HPARAMS_METRICS_FIRST.index(k) if k in HPARAMS_METRICS_FIRST else len(keys))
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tb_tag(k))) for k in keys]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
    end = plugin_data_pb2.SessionEndInfo(status=HPARAMS_STATUS[status], end_time_secs=time.time())
    file_writer = writer._get_file_writer()
    for tag, data in (
        (metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        (metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
        (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)),
    ):
        summary = Summary()
        summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data))
        file_writer.add_summary(summary)
