"""Summarise a sweep, or any folder of runs: a table per run, a table per group, and plots.

    python -m scripts.summarize outputs/sweeps/2026-11-25_12-00-00_123456
    python -m scripts.summarize outputs/runs                       # every run below it
    python -m scripts.summarize outputs/sweeps/<sweep> --quality-key w1_large

Every folder below FOLDER that holds ``.hydra/``, ``summary.json`` or ``metrics.jsonl`` is a run
(except folders of other entry points, told apart by their log: ``batch_bias.log``, ...). From
each, it reads ``summary.json`` (status, steps, time, final metrics), ``metrics.jsonl`` (the curves),
``.hydra/overrides.yaml`` (the overrides that tell runs apart) and ``evaluations/*.json`` (extra
metrics computed after training, such as ``experiments.evaluate``'s ``metrics``; their columns are
prefixed with the file's stem). It writes, into
FOLDER:

* ``summary.csv``: one row per run: its path relative to FOLDER, its overrides, status, steps_done,
  elapsed_s, the final metrics and the evaluation columns;
* ``summary.md``: the runs grouped by their overrides other than ``seed`` (and ``resume``): per group,
  the number of runs, how many did not complete, and mean ± sd over the completed ones of every final
  metric;
* ``curves.png``: exact W1, the critic's estimate and the real-vs-real W1 over steps, one panel per
  group (thin lines: runs; thick lines: the mean over the runs that reached each step);
* ``quality_vs_critic_error.png``: final sample quality (``w1_large``) against final
  ``critic_rel_error``, one point per run.

With ``--results PAGE --section NAME [--keys k1,k2]`` it also writes the grouped table (of those keys)
and ``curves.png`` into a page, between the markers of section ``scripts.summarize NAME``
(:mod:`scripts.page`), with the sweep's command (from Hydra's ``multirun.yaml``) and the machine::

    python -m scripts.summarize outputs/sweeps/<sweep> --results docs/RESULTS.md --section claim1_toy \\
        --keys w1_exact,w1_real_real,critic_estimate

It reads partial sweeps: a run still going (no ``summary.json`` yet) appears in the CSV as
``unfinished`` with its last evaluation, and in the curves; failed and diverged runs appear with their
status. Only completed runs enter the means. Everything it leaves out is printed with the reason.
Standard library, NumPy, Matplotlib and PyYAML only, so it runs wherever the run folders were copied to.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gan.config import flatten
from gan.runfolder import atomic_write_bytes

CSV_NAME = "summary.csv"
MD_NAME = "summary.md"
CURVES_NAME = "curves.png"
QUALITY_NAME = "quality_vs_critic_error.png"

COMPLETED = "completed"
UNFINISHED = "unfinished"  # no summary.json: still running, or killed before it could write one
UNREADABLE = "unreadable"  # summary.json exists but is not a JSON object

# Overrides that make repetitions of one configuration, not new groups (a resumed run gives the same
# numbers as an uninterrupted one).
GROUP_EXCLUDE = ("seed", "resume")
CURVE_KEYS = ("w1_exact", "critic_estimate", "w1_real_real")
CURVE_STYLE = {
    "w1_exact": ("tab:blue", "exact W1"),
    "critic_estimate": ("tab:red", "critic estimate"),
    "w1_real_real": ("tab:gray", "real-vs-real W1"),
}
ERROR_KEY = "critic_rel_error"
DEFAULT_QUALITY_KEY = "w1_large"

# Metric columns come in this order (the README's metrics table, then quality: toy data, then images); any
# other key follows, sorted.
METRIC_ORDER = (
    "w1_exact", "w2_exact", "w1_real_real", "critic_estimate", "critic_gap", "critic_rel_error",
    "ctransform_bound", "lipschitz_max", "grad_ot_cosine", "ot_nonoptimal",
    "w1_large", "modes_covered", "high_quality_frac",
    "fid", "kid_mean", "kid_std", "precision", "recall", "sharpness",
)  # fmt: skip

# Folders that are never run folders and never contain one.
_NOT_RUNS = {"tb", "checkpoints", "evaluations", "__pycache__"}


@dataclass
class Run:
    """What one run folder says about itself."""

    path: Path
    rel: str
    overrides: dict[str, str] = field(default_factory=dict)
    status: str = UNFINISHED
    steps_done: int | None = None
    elapsed_s: float | None = None
    final: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def seed(self) -> str:
        return self.overrides.get("seed", "")

    def group_key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in self.overrides.items() if k not in GROUP_EXCLUDE))

    def metrics(self) -> dict[str, float]:
        """Final metrics and evaluation columns together."""
        return self.final | self.extra


# ---------------------------------------------------------------------------------------------------------
# Reading


def is_run_folder(path: Path) -> bool:
    return (
        (path / ".hydra").is_dir() or (path / "summary.json").is_file() or (path / "metrics.jsonl").is_file()
    )


def other_app(path: Path) -> str | None:
    """The log file of another Hydra app (``batch_bias.log``, ...) in a folder that holds no training
    output, or None. Hydra names a job's log after its entry point; training writes ``train.log``."""
    if (
        (path / "summary.json").is_file()
        or (path / "metrics.jsonl").is_file()
        or (path / "train.log").exists()
    ):
        return None
    logs = sorted(p.name for p in path.glob("*.log"))
    return logs[0] if logs else None


def find_runs(root: Path, notes: list[str] | None = None) -> list[Path]:
    """Training-run folders at or below ``root``, sorted; nothing inside a run folder is searched further.

    Folders of other entry points (a ``.hydra/`` beside, say, ``batch_bias.log``) are passed over, with
    a line in ``notes``.
    """
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        # Hidden folders hold launcher state (.submitit) or Hydra's own files, never runs.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _NOT_RUNS)
        if any(is_run_folder(here / d) for d in dirnames):
            continue  # a train.parallel_seeds job: its copies (seed_<s>/) are the runs, not the job's folder
        if is_run_folder(here):
            dirnames.clear()
            log = other_app(here)
            if log is None:
                found.append(here)
            elif notes is not None:
                rel = here.relative_to(root).as_posix() or "."
                notes.append(f"{rel}: not a training run (its log is {log}); not summarised")
    return sorted(found)


def read_overrides_yaml(path: Path) -> list[str]:
    """The list of strings in Hydra's ``overrides.yaml``, without a YAML library.

    Hydra writes a flat YAML list: ``- key=value`` per item, single-quoted when the value needs it
    (``''`` inside is a quote) and folded onto indented continuation lines when it is long.
    """
    items: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()  # a folded line break reads as one space
        elif line.strip() and line.strip() != "[]":
            raise ValueError(f"unexpected line in {path.name}: {line!r}")
    return [_unquote_yaml(item.rstrip()) for item in items]


def _unquote_yaml(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return json.loads(text)  # YAML's double-quoted escapes are a superset of JSON's common ones
    return text


def parse_override(text: str) -> tuple[str, str]:
    """``"+a.b=3"`` -> ``("a.b", "3")``; a deletion ``"~a"`` -> ``("a", "~")``."""
    if text.startswith("~"):
        key, _, value = text[1:].partition("=")
        return key, "~" + value
    key, _, value = text.lstrip("+").partition("=")
    return key, value


def _read_jsonl(path: Path, notes: list[str], rel: str) -> list[dict]:
    by_step: dict[int, dict] = {}
    bad = 0
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            # The last line of a run still writing it can be half there; anything else is damage.
            if i < len(lines) - 1:
                bad += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            by_step[row["step"]] = row  # a resumed run repeats steps after its checkpoint: the later row wins
        else:
            bad += 1
    if bad:
        notes.append(f"{rel}: skipped {bad} unreadable line(s) of {path.name}")
    return [by_step[s] for s in sorted(by_step)]


def _numeric_items(obj: dict) -> dict[str, float]:
    """Numbers in a (nested) dict as ``{"a.b": value}`` (:func:`gan.config.flatten`); other values are
    not metrics."""
    return {k: v for k, v in flatten(obj).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def load_run(root: Path, path: Path, notes: list[str]) -> Run:
    """Everything ``path`` holds; problems are appended to ``notes`` and never raise."""
    rel = path.relative_to(root).as_posix() or "."
    run = Run(path=path, rel=rel)

    overrides_path = path / ".hydra" / "overrides.yaml"
    if overrides_path.is_file():
        try:
            run.overrides = dict(parse_override(o) for o in read_overrides_yaml(overrides_path))
        except (ValueError, OSError) as exc:
            notes.append(f"{rel}: .hydra/overrides.yaml not read ({exc}); grouped as if it had no overrides")

    if (path / "metrics.jsonl").is_file():
        run.rows = _read_jsonl(path / "metrics.jsonl", notes, rel)

    summary_path = path / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            run.status = UNREADABLE
            notes.append(f"{rel}: summary.json unreadable ({exc}); listed as {UNREADABLE}")
        else:
            run.status = str(summary.get("status", UNREADABLE))
            run.steps_done = summary.get("steps_done")
            run.elapsed_s = summary.get("elapsed_s")
            run.error = str(summary.get("error", ""))
            final = summary.get("final") or {}
            run.final = {k: v for k, v in _numeric_items(final).items() if k != "step"}
    if run.status != COMPLETED and not run.final and run.rows:
        # Without a final evaluation on record, the last logged one stands in for it.
        run.final = {k: v for k, v in _numeric_items(run.rows[-1]).items() if k != "step"}
    if run.steps_done is None and run.rows:
        run.steps_done = run.rows[-1]["step"]

    eval_dir = path / "evaluations"
    if eval_dir.is_dir():
        for file in sorted(eval_dir.glob("*.json")):
            try:
                values = json.loads(file.read_text())
                if not isinstance(values, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                notes.append(f"{rel}: evaluations/{file.name} skipped ({exc})")
                continue
            if isinstance(values.get("metrics"), dict):  # experiments.evaluate: its settings are no columns
                values = values["metrics"]
            run.extra |= {f"{file.stem}.{k}": v for k, v in _numeric_items(values).items()}
    return run


def collect(root: Path) -> tuple[list[Run], list[str]]:
    notes: list[str] = []
    return [load_run(root, p, notes) for p in find_runs(root, notes)], notes


# ---------------------------------------------------------------------------------------------------------
# Tables


def mean_sd(values) -> tuple[float, float, int]:
    """Mean and sample sd (ddof=1; NaN for one value) of the finite values, and how many there are."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan, 0
    sd = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
    return float(np.mean(arr)), sd, int(arr.size)


def fmt_mean_sd(mean: float, sd: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.4g}" if math.isnan(sd) else f"{mean:.4g} ± {sd:.4g}"


def _natural(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def metric_columns(keys) -> list[str]:
    keys = set(keys)
    known = [k for k in METRIC_ORDER if k in keys]
    return known + sorted(keys - set(known))


def group_runs(runs: list[Run]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.group_key()].append(run)
    return dict(sorted(groups.items(), key=lambda kv: [(k, _natural(v)) for k, v in kv[0]]))


def varying_keys(runs: list[Run]) -> list[str]:
    """Override keys (other than seed) whose value is not the same in every run."""
    keys = sorted({k for r in runs for k in r.overrides if k not in GROUP_EXCLUDE})
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def group_label(key: tuple[tuple[str, str], ...], varying: list[str]) -> str:
    shown = [f"{k}={v}" for k, v in key if k in varying]
    missing = [f"{k} unset" for k in varying if k not in dict(key)]
    return ", ".join(shown + missing) or "all runs"


def csv_text(runs: list[Run]) -> str:
    override_keys = sorted({k for r in runs for k in r.overrides})
    metric_keys = metric_columns({k for r in runs for k in r.final})
    extra_keys = sorted({k for r in runs for k in r.extra})
    fixed = {"run", "status", "steps_done", "elapsed_s", "error", *metric_keys, *extra_keys}
    override_cols = {k: (f"override:{k}" if k in fixed else k) for k in override_keys}
    header = ["run", *override_cols.values(), "status", "steps_done", "elapsed_s", *metric_keys, *extra_keys]
    header.append("error")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in runs:
        row = [r.rel, *(r.overrides.get(k, "") for k in override_keys), r.status]
        row += [_cell(r.steps_done), _cell(r.elapsed_s)]
        row += [_cell(r.final.get(k)) for k in metric_keys] + [_cell(r.extra.get(k)) for k in extra_keys]
        row.append(r.error)
        writer.writerow(row)
    return buf.getvalue()


def _cell(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_text(
    root: Path, runs: list[Run], columns: list[str] | None = None, *, title: bool = True
) -> str:
    """The grouped table of ``summary.md``; ``columns``: only these metrics (default: every one)."""
    groups = group_runs(runs)
    varying = varying_keys(runs)
    counts: dict[str, int] = defaultdict(int)
    for r in runs:
        counts[r.status] += 1
    shared = sorted({(k, v) for r in runs for k, v in r.overrides.items() if k not in varying})
    shared = [
        (k, v) for k, v in shared if k not in GROUP_EXCLUDE and all(r.overrides.get(k) == v for r in runs)
    ]
    completed = [r for r in runs if r.status == COMPLETED]
    if columns is None:
        columns = ["elapsed_s", *metric_columns({k for r in completed for k in r.final})]
        columns += sorted({k for r in completed for k in r.extra})

    lines = [f"# Summary of `{root.name or root}`", ""] if title else []
    lines += [
        f"{len(runs)} run(s): " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + "."
    ]
    if shared:
        lines += ["", "Overrides shared by every run: " + ", ".join(f"`{k}={v}`" for k, v in shared) + "."]
    lines += [
        "",
        "Runs are grouped by their overrides other than `seed` (and `resume`). Each cell is the mean ± "
        "sample standard deviation (ddof 1) of the final evaluation over the group's **completed** runs; "
        "a single run shows its value alone, `(k)` after a cell means only k of them have that metric, "
        "and `–` that none has.",
        "",
        "| group | runs | not completed | seeds | " + " | ".join(columns) + " |",
        "|---|---:|---:|---|" + "---:|" * len(columns),
    ]
    for key, members in groups.items():
        done = [r for r in members if r.status == COMPLETED]
        seeds = ", ".join(sorted({r.seed for r in members if r.seed}, key=_natural)) or "–"
        cells = []
        for col in columns:
            values = [r.elapsed_s if col == "elapsed_s" else r.metrics().get(col) for r in done]
            mean, sd, n = mean_sd(values)
            cell = fmt_mean_sd(mean, sd)
            if 0 < n < len(done):
                cell += f" ({n})"
            cells.append(cell)
        row = [
            _md(group_label(key, varying)),
            str(len(members)),
            str(len(members) - len(done)),
            seeds,
            *cells,
        ]
        lines.append("| " + " | ".join(row) + " |")
    not_done = [r for r in runs if r.status != COMPLETED]
    if not_done:
        lines += ["", "Not completed (left out of the means):", ""]
        for r in not_done:
            where = f"at step {r.steps_done}" if r.steps_done is not None else "before its first evaluation"
            why = f": {r.error}" if r.error else ""
            lines.append(f"- `{r.rel}`: {r.status} {where}{why}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_curve(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the mean of ``key`` over the runs that logged it at each step."""
    at: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        for row in r.rows:
            value = row.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                at[row["step"]].append(value)
    steps = sorted(at)
    return np.asarray(steps), np.asarray([np.mean(at[s]) for s in steps])


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_curves(runs: list[Run]) -> bytes | None:
    groups = {k: [r for r in v if r.rows] for k, v in group_runs(runs).items()}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    plt = _pyplot()
    varying = varying_keys(runs)
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (key, members) in zip(axes.flat, groups.items(), strict=False):
        for metric in CURVE_KEYS:
            color, label = CURVE_STYLE[metric]
            for r in members:
                pts = [
                    (row["step"], row[metric]) for row in r.rows if isinstance(row.get(metric), int | float)
                ]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=color, alpha=0.25, linewidth=0.8)
            steps, mean = mean_curve(members, metric)
            if len(steps):
                ax.plot(steps, mean, color=color, linewidth=2, label=f"{label} (mean)")
        ax.set_title(f"{_short(group_label(key, varying))}  [{len(members)} run(s)]", fontsize=9)
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle("critic estimate against exact W1 on the same minibatches")
    fig.tight_layout()
    return _png(plt, fig)


def plot_quality(runs: list[Run], quality_key: str) -> bytes | None:
    def point(r):
        x, y = r.final.get(ERROR_KEY), r.metrics().get(quality_key)
        ok = all(isinstance(v, int | float) and math.isfinite(v) for v in (x, y))
        return (x, y) if ok else None

    groups = {k: [(r, point(r)) for r in v if point(r)] for k, v in group_runs(runs).items()}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    plt = _pyplot()
    varying = varying_keys(runs)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs = []
    for i, (key, pts) in enumerate(groups.items()):
        color = colors[i % len(colors)]
        done = [p for r, p in pts if r.status == COMPLETED]
        other = [p for r, p in pts if r.status != COMPLETED]
        label = _short(group_label(key, varying), 40)
        if done:
            ax.scatter(*zip(*done, strict=True), color=color, label=label)
        if other:
            ax.scatter(*zip(*other, strict=True), color=color, marker="x", label=f"{label} (not completed)")
        xs += [p[0] for _, p in pts]
    positive = [x for x in xs if x > 0]
    if len(positive) == len(xs) and max(positive) > 20 * min(positive):
        ax.set_xscale("log")
    ax.set_xlabel(f"final {ERROR_KEY}  (|critic estimate − exact W1| / exact W1)")
    ax.set_ylabel(f"final {quality_key}  (lower is better)" if quality_key.startswith("w1") else quality_key)
    ax.set_title("sample quality against how well the critic estimates W1\n(one point per run)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(plt, fig)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Writing


def skip_notes(runs: list[Run], quality_key: str) -> list[str]:
    """Why each run is missing from some output."""
    notes = []
    for r in runs:
        if r.status == UNFINISHED:
            where = (
                f"{len(r.rows)} evaluation(s) up to step {r.rows[-1]['step']} are in the curves"
                if r.rows
                else "no evaluations yet (still starting, or it failed before training: see its train.log)"
            )
            notes.append(f"{r.rel}: no summary.json (still running, or stopped before writing it); {where}")
        elif r.status != COMPLETED:
            why = f" ({r.error})" if r.error else ""
            notes.append(f"{r.rel}: {r.status} at step {r.steps_done}{why}; left out of the means")
        if r.final and (ERROR_KEY not in r.final or quality_key not in r.metrics()):
            lacking = [k for k in (ERROR_KEY, quality_key) if k not in r.metrics()]
            notes.append(f"{r.rel}: no final {' or '.join(lacking)}; not in {QUALITY_NAME}")
    return notes


def summarize(root: str | Path, *, quality_key: str = DEFAULT_QUALITY_KEY) -> dict:
    """Summarise every run below ``root`` into files in ``root``.

    Returns
    -------
    dict
        ``{"runs": [Run, ...], "written": [Path, ...], "skipped": [str, ...]}``; ``skipped`` says what
        was left out of which output, and why.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    runs, notes = collect(root)
    notes += skip_notes(runs, quality_key)
    written: list[Path] = []
    if not runs:
        return {"runs": runs, "written": written, "skipped": notes}

    for name, data in ((CSV_NAME, csv_text(runs)), (MD_NAME, markdown_text(root, runs))):
        atomic_write_bytes(root / name, data.encode())
        written.append(root / name)
    for name, png, absent in (
        (CURVES_NAME, plot_curves(runs), "no run has evaluations yet"),
        (QUALITY_NAME, plot_quality(runs, quality_key), f"no run has both {ERROR_KEY} and {quality_key}"),
    ):
        if png is None:
            (root / name).unlink(missing_ok=True)  # a plot from an earlier call would no longer be true
            notes.append(f"{name} not written: {absent}")
            continue
        atomic_write_bytes(root / name, png)
        written.append(root / name)
    return {"runs": runs, "written": written, "skipped": notes}


def sweep_command(root: Path) -> str | None:
    """The command that made the multirun in ``root``, from Hydra's ``multirun.yaml``."""
    import yaml

    try:
        hydra = yaml.safe_load((root / "multirun.yaml").read_text())["hydra"]
        given = hydra["overrides"]
        launch = [str(o) for o in given.get("hydra") or [] if not str(o).startswith("hydra.mode=")]
        overrides = [*map(str, given["task"]), *launch]  # hydra.mode=MULTIRUN is --multirun
        job = hydra["job"]["name"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    return " ".join(["python", "-m", f"experiments.{job}", "--multirun", *overrides])


def results_section(root: Path, runs: list[Run], command: str, keys: list[str], figure: str | None) -> str:
    """A page section for the runs below ``root``: how it was made, the grouped table of ``keys``, the
    curves figure (a link relative to the page)."""
    from scripts.page import machine

    made = sweep_command(root)
    ended = [r.path / "summary.json" for r in runs if (r.path / "summary.json").is_file()]
    when = max((p.stat().st_mtime for p in ended), default=None)
    lines = [
        f"Written by `{command}` from the runs of "
        + (f"`{made}`" if made else f"`{root.name}`")
        + "; rerunning both rewrites this section.",
        "",
        f"Machine: {machine()}"
        + (
            f"; the last run ended {dt.datetime.fromtimestamp(when, dt.UTC):%Y-%m-%d %H:%M} UTC."
            if when
            else "."
        ),
        "",
        markdown_text(root, runs, keys, title=False).rstrip(),
    ]
    if figure:
        lines += ["", f"![exact W1, critic estimate and real-vs-real W1 over training]({figure})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.summarize",
        description="Summarise the run folders below FOLDER into summary.csv, summary.md and PNG plots.",
    )
    parser.add_argument("folder", type=Path, help="a sweep folder, a folder of runs, or one run folder")
    parser.add_argument(
        "--quality-key",
        default=DEFAULT_QUALITY_KEY,
        help=f"final metric on the y axis of {QUALITY_NAME} (default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="also write the table (of --keys) and the curves into this page, between the markers of "
        "--section (scripts.page); the figure goes to an images/ folder beside the page",
    )
    parser.add_argument("--section", help="the section's name on the --results page")
    parser.add_argument("--keys", help="comma-separated metrics for the --results table (default: all)")
    parser.add_argument("--no-curves", action="store_true", help="leave curves.png out of the --results page")
    args = parser.parse_args(argv)
    if (args.results is None) != (args.section is None):
        print("error: --results and --section go together", file=sys.stderr)
        return 2
    try:
        result = summarize(args.folder, quality_key=args.quality_key)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = result["runs"]
    if not runs:
        print(
            f"error: no run folders below {args.folder} (none holds .hydra/, summary.json or metrics.jsonl)"
        )
        return 1
    statuses = defaultdict(int)
    for r in runs:
        statuses[r.status] += 1
    print(
        f"{len(runs)} run(s) below {args.folder}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    )
    for note in result["skipped"]:
        print(f"skipped: {note}")
    for path in result["written"]:
        print(f"wrote {path}")
    if args.results is not None:
        write_results(args, runs, argv if argv is not None else sys.argv[1:])
        print(f"wrote section {args.section} of {args.results}")
    return 0


def write_results(args, runs: list[Run], argv: list[str]) -> None:
    """The ``--results`` page's ``--section``: :func:`results_section`, its figure copied beside the page."""
    import shlex

    from scripts.page import figure, write_section

    curves = args.folder / CURVES_NAME
    link = None
    if curves.is_file() and not args.no_curves:
        link = figure(args.results, f"{args.section}_curves", curves.read_bytes())
    keys = [k.strip() for k in args.keys.split(",")] if args.keys else None
    command = shlex.join(["python", "-m", "scripts.summarize", *argv])
    text = results_section(args.folder, runs, command, keys, link)
    write_section(args.results, f"scripts.summarize {args.section}", text)


if __name__ == "__main__":
    sys.exit(main())
