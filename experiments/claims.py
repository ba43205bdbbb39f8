"""Run the image experiments of claims 1 to 4 and write their section of the results page from the runs.

    python -m experiments.claims                  # budget=small (make claims): about an hour on 2 CPU cores
    python -m experiments.claims budget=paper     # the _paper twins, for a GPU or a cluster
    python -m experiments.claims run=false        # train nothing: rewrite the section from the sweep folders
    python -m experiments.claims out=outputs/claims/try results=/tmp/RESULTS.md images=/tmp/images

For each preset of the budget (``conf/claims.yaml``) it runs ``python -m experiments.train --multirun
experiment=<preset> resume=true train.threads=1`` in a subprocess, with Hydra's joblib launcher
(``n_jobs``), into ``<out>/<preset>/``. A sweep whose jobs all completed under the same command is not
started again, and any other is rerun with ``resume=true``, so completed jobs are kept and interrupted
ones continue. Claim 3 needs no training: the budget's ``centroids`` overrides go to one run of
``python -m experiments.centroids`` into ``<out>/claim3_centroids/`` (reused when it ran before under the
same command). Then it reads every run folder (``summary.json``, ``metrics.jsonl``, ``.hydra/``) and
writes, between the ``experiments.claims`` markers of ``results`` (:func:`scripts.page.write_section`;
the rest of the page is kept), per claim: a table of mean and 95% Student-t interval over seeds
(:func:`metrics.stats.t_interval`), figures in ``images`` (critic estimate against exact and
real-vs-real W1 over training, generated samples per objective from each run's checkpoint, quality
against critic error) and a verdict, *holds*, *refuted* or *inconclusive*, computed by the criterion
printed beside it: the docstrings of :func:`claim1_verdict`, :func:`claim2_comparison`,
:func:`claim3_verdict`, :func:`claim4_comparison` and :func:`combine`. Only completed runs enter the
numbers; a failed, diverged or unfinished job is counted in the tables and leaves its seed out of every
comparison it belongs to.

Per run, sample-quality keys (``fid``, ``sharpness``, ``precision``, ``recall``, ``w1_large``) are read
from the final evaluation, and the keys measured on one pair of minibatches (``critic_rel_error``,
``w1_exact``, ``grad_ot_cosine``, ``probe_gap``, ...) are averaged over the run's evaluations in the
second half of training (step >= half of ``train.steps``), which keeps the noise of a single batch pair
out of the comparison of seeds.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gan.config import ConfigError, group_options
from metrics.stats import t_interval

log = logging.getLogger(__name__)

SECTION = "experiments.claims"
COMMAND = "python -m experiments.claims"
SWEEP_RECORD = "claims_sweep.json"  # in a sweep folder: the command and its job folders
TIMING_PREFIX = "Wall time"  # the one line of the section that changes from one identical run to the next
ROLES = ("objectives", "critic_steps")
CENTROIDS_FOLDER = "claim3_centroids"  # below out: the experiments.centroids run of claim 3

HOLDS, REFUTED, INCONCLUSIVE = "holds", "refuted", "inconclusive"
REFERENCE = "wgan_gp"
OBJECTIVE_ORDER = ("wgan_gp", "ctransform", "c_eps", "exact_ot", "sinkhorn")
NO_CRITIC = ("exact_ot", "sinkhorn")  # their generator loss is the minibatch W1 or its entropic version
C_TRANSFORMS = ("ctransform", "c_eps")
# Claim 1: a critic whose estimate is off by more than this share of the exact W1 is a poor estimate. On
# problems with a known W1 the penalised critics get within 3-8% of it (docs/RESULTS.md, known truth), so
# a quarter is several times what a trained critic can reach; fixed in advance, not fitted to results.
CLAIM1_POOR = 0.25

FINAL_KEYS = ("fid", "sharpness", "precision", "recall", "kid_mean", "w1_large")  # read at the last step
# The columns of the tables; every other key is averaged over the second half of training.
CLAIM1_KEYS = (
    "w1_exact", "w1_real_real", "critic_estimate", "critic_rel_error", "probe_estimate", "probe_gap",
)  # fmt: skip
CLAIM2_KEYS = (
    "critic_rel_error", "probe_gap", "w1_exact", "w1_real_real", "fid", "sharpness", "precision", "recall",
)  # fmt: skip
CLAIM4_KEYS = ("grad_ot_cosine", "critic_rel_error", "lipschitz_max", "fid", "sharpness")


# ---------------------------------------------------------------------------------------------------------
# Numbers over seeds


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds and the half-width of its 95% Student-t interval (NaN when ``n < 2``)."""

    mean: float
    half: float
    n: int

    @property
    def sign(self) -> int:
        """+1 when the whole interval lies above 0, -1 when below, 0 when it holds 0 or ``n < 2``."""
        if self.n < 2 or not math.isfinite(self.half):
            return 0
        return 1 if self.mean - self.half > 0 else -1 if self.mean + self.half < 0 else 0

    def cell(self) -> str:
        if self.n == 0:
            return "–"
        if self.n == 1 or not math.isfinite(self.half):
            return f"{self.mean:.3g}"
        return f"{self.mean:.3g} ± {self.half:.2g}"


def interval(values) -> Interval:
    """:class:`Interval` of the finite values among ``values``."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if len(v) < 2:
        return Interval(v[0] if v else math.nan, math.nan, len(v))
    return Interval(*t_interval(v), len(v))


def paired(reference: dict[int, float], candidate: dict[int, float]) -> Interval:
    """:class:`Interval` of ``candidate[s] - reference[s]`` over the seeds ``s`` that both have."""
    seeds = sorted(set(reference) & set(candidate))
    return interval(candidate[s] - reference[s] for s in seeds)


# ---------------------------------------------------------------------------------------------------------
# Runs


@dataclass
class Run:
    """One run folder as the claims read it."""

    path: Path
    status: str
    seed: int | None
    config: DictConfig | None
    choices: dict
    final: dict
    rows: list[dict]
    curves: list[dict] = field(default_factory=list)  # curves.jsonl: cheap per-batch keys, every few steps

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def value(self, key: str) -> float:
        """``key`` from the final evaluation (:data:`FINAL_KEYS`), or its mean over the evaluations in the
        second half of training; NaN when the run has none."""
        if key in FINAL_KEYS:
            value = self.final.get(key)
            return float(value) if isinstance(value, int | float) else math.nan
        half = (self.config.train.steps if self.config is not None else 0) / 2
        late = [r[key] for r in self.rows if r["step"] >= half and isinstance(r.get(key), int | float)]
        return float(np.mean(late)) if late else math.nan


@dataclass
class Group:
    """The runs of one setting of a sweep (an objective, or a number of critic steps) over seeds."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.completed]

    def by_seed(self, key: str) -> dict[int, float]:
        """``{seed: run.value(key)}`` over the completed runs that have a finite value."""
        values = {r.seed: r.value(key) for r in self.completed}
        return {s: v for s, v in values.items() if math.isfinite(v)}

    def interval(self, key: str) -> Interval:
        return interval(self.by_seed(key).values())

    def has_critic(self) -> bool:
        return any("critic_rel_error" in row for r in self.completed for row in r.rows)

    def status_cell(self) -> str:
        bad = [r.status for r in self.runs if not r.completed]
        return f"{len(self.runs)}" + (f" ({len(bad)} {'/'.join(sorted(set(bad)))})" if bad else "")


@dataclass
class Sweep:
    """A preset's sweep folder and its runs, grouped by what the sweep varies."""

    role: str
    preset: str
    folder: Path
    groups: list[Group] = field(default_factory=list)
    seconds: float | None = None  # wall time of this command's multirun; None when reused

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    @property
    def runs(self) -> list[Run]:
        return [r for g in self.groups for r in g.runs]

    def label(self) -> str:
        """Data, model, batch and steps, read from a run's config (the preset's name when there is none)."""
        run = next((r for r in self.runs if r.config is not None), None)
        if run is None:
            return self.preset
        cfg, data = run.config, run.choices.get("data", "?")
        critic = cfg.model.critic
        if "depth" in critic:
            model = f"MLP {critic.depth}×{critic.width}"
        else:
            model = f"{run.choices.get('model', 'model').upper()} width {critic.width}"
        return f"{data}, {model}, batch {cfg.train.batch_size}, {cfg.train.steps:,} generator steps"


def _load_run(path: Path) -> Run:
    from scripts.summarize import load_run  # the same reading of a run folder as scripts.summarize

    notes: list[str] = []
    base = load_run(path.parent, path, notes)
    config, choices = None, {}
    try:
        config = OmegaConf.load(path / ".hydra" / "config.yaml")
        choices = dict(OmegaConf.load(path / ".hydra" / "hydra.yaml").hydra.runtime.choices)
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("%s: config not read (%s)", path, exc)
    seed = config.seed if config is not None else None
    return Run(path, base.status, seed, config, choices, base.final, base.rows, _read_curves(path))


def _read_curves(path: Path) -> list[dict]:
    """A run's curves.jsonl read as scripts.summarize reads metrics.jsonl (one row per step, the later
    row of a resumed run winning); none when the run has no such file."""
    from gan.runfolder import CURVES
    from scripts.summarize import _read_jsonl

    file = path / CURVES
    return _read_jsonl(file, [], file.name) if file.exists() else []


def _group_name(role: str, run: Run) -> str:
    if role == "critic_steps":
        return str(run.config.objective.critic_steps) if run.config is not None else "?"
    return run.choices.get("objective", "?")


def _group_order(role: str, name: str):
    if role == "critic_steps":
        return (0, int(name), name) if name.isdigit() else (1, 0, name)
    order = OBJECTIVE_ORDER.index(name) if name in OBJECTIVE_ORDER else len(OBJECTIVE_ORDER)
    return (order, 0, name)


def load_sweep(role: str, preset: str, folder: Path) -> Sweep:
    """The runs in ``folder`` (a preset's multirun), grouped by objective or by critic steps."""
    from scripts.summarize import find_runs

    sweep = Sweep(role, preset, folder)
    if not folder.is_dir():
        return sweep
    groups: dict[str, Group] = {}
    for path in find_runs(folder):
        run = _load_run(path)
        name = _group_name(role, run)
        groups.setdefault(name, Group(name)).runs.append(run)
    sweep.groups = [groups[k] for k in sorted(groups, key=lambda n: _group_order(role, n))]
    for g in sweep.groups:
        g.runs.sort(key=lambda r: (r.seed is None, r.seed))
    return sweep


# ---------------------------------------------------------------------------------------------------------
# Running the sweeps


def sweep_command(preset: str, folder: Path, cfg: DictConfig) -> list[str]:
    """The multirun of ``preset`` into ``folder``: one thread per job, resumable, the config's extras."""
    launcher = list(cfg.launcher) or (
        ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={cfg.n_jobs}"] if cfg.n_jobs > 1 else []
    )
    seeds = [f'hydra.sweeper.params.seed="{",".join(map(str, cfg.seeds))}"'] if cfg.seeds else []
    return [
        sys.executable, "-m", "experiments.train", "--multirun", f"experiment={preset}",
        f"hydra.sweep.dir={folder}", "resume=true", "train.threads=1", "train.progress=false",
        *launcher, *seeds, *map(str, cfg.overrides),
    ]  # fmt: skip


def _summary_status(path: Path) -> str | None:
    try:
        return json.loads((path / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def read_record(folder: Path) -> dict:
    """The record a run of this command left in ``folder`` (its command, and what it made); ``{}``."""
    try:
        record = json.loads((folder / SWEEP_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def run_recorded(name: str, command: list[str], folder: Path, log_path: Path, made, env=None) -> float:
    """Run ``command`` with its output appended to ``log_path``, then record in ``folder`` the command, its
    exit code and ``made(folder)`` (what it left there); returns its wall time in seconds."""
    from gan.runfolder import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    log.info("%s: %s (log: %s)", name, shlex.join(command[1:]), log_path)
    started = time.perf_counter()
    with log_path.open("a") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - started
    if done.returncode:
        log.warning("%s: %s exited with %d; see %s", name, command[2], done.returncode, log_path)
    record = {"command": command[1:], **made(folder), "returncode": done.returncode}
    atomic_write_bytes(folder / SWEEP_RECORD, (json.dumps(record, indent=1) + "\n").encode())
    return seconds


def sweep_is_done(folder: Path, command: list[str]) -> bool:
    """True when ``folder`` holds the record of ``command`` and every job it lists completed."""
    record = read_record(folder)
    jobs = record.get("jobs") or []
    return (
        record.get("command") == command[1:]
        and bool(jobs)
        and all(_summary_status(folder / job) == "completed" for job in jobs)
    )


def _jobs(folder: Path) -> dict:
    from scripts.summarize import find_runs

    return {"jobs": [p.relative_to(folder).as_posix() for p in find_runs(folder)]}


def run_sweep(preset: str, folder: Path, log_path: Path, cfg: DictConfig) -> float | None:
    """Run (or resume) ``preset``'s multirun unless it is done; returns its wall time in seconds, ``None``
    when the completed sweep is reused. A job that fails is recorded in its own folder (the multirun
    then exits non-zero, and the other jobs still run)."""
    command = sweep_command(preset, folder, cfg)
    if sweep_is_done(folder, command):
        log.info("%s: every job completed before; reused", preset)
        return None
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    seconds = run_recorded(preset, command, folder, log_path, _jobs, env)
    log.info("%s: %d job folder(s) in %.1f min", preset, len(read_record(folder)["jobs"]), seconds / 60)
    return seconds


def centroids_overrides(cfg: DictConfig) -> list[str]:
    """The budget's overrides of experiments.centroids (claim 3)."""
    return list(map(str, cfg.budgets[cfg.budget].get("centroids") or []))


def centroids_command(folder: Path, cfg: DictConfig) -> list[str]:
    """Claim 3's run of experiments.centroids into ``folder``, with the budget's overrides."""
    command = [sys.executable, "-m", "experiments.centroids", *centroids_overrides(cfg)]
    return [*command, "progress=false", f"hydra.run.dir={folder}"]


def run_centroids(folder: Path, log_path: Path, cfg: DictConfig) -> float | None:
    """Run claim 3's k-means comparison unless ``folder`` holds its result under the same command; returns
    its wall time in seconds, ``None`` when the earlier result is reused."""
    command = centroids_command(folder, cfg)
    record = read_record(folder)
    if record.get("command") == command[1:] and record.get("returncode") == 0 and load_centroids(folder):
        log.info("claim 3: the k-means comparison ran before; reused")
        return None
    return run_recorded("claim 3", command, folder, log_path, lambda _: {})


def load_centroids(folder: Path) -> dict | None:
    """The ``centroids.json`` experiments.centroids wrote into ``folder``; ``None`` when there is none."""
    try:
        return json.loads((folder / "centroids.json").read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------
# Criteria


@dataclass
class Comparison:
    """Two settings of one sweep, paired by seed: ``candidate`` is expected to approximate W1 better (claim
    2) or to have the better-aligned gradient field (claim 4) than ``reference``."""

    reference: str
    candidate: str
    premise: Interval | None  # reference minus candidate critic_rel_error; None: by construction
    deltas: dict[str, Interval]  # candidate minus reference, per key
    verdict: str
    note: str = ""

    @property
    def seeds(self) -> int:
        return max((d.n for d in self.deltas.values()), default=0)


def claim1_verdict(group: Group) -> tuple[str, Interval]:
    """Claim 1 holds for a WGAN-GP setting when the 95% interval over seeds of its critic's relative error
    |critic_estimate − w1_exact| / w1_exact (per run: the mean over the evaluations of the second half of
    training) lies entirely above 0.25, i.e. the critic's estimate is off by more than a quarter of the
    exact W1 of the very batches it is evaluated on; refuted when the interval lies entirely below 0.25;
    inconclusive when it contains 0.25 or fewer than 2 seeds completed."""
    error = group.interval("critic_rel_error")
    shifted = Interval(error.mean - CLAIM1_POOR, error.half, error.n)
    return {1: HOLDS, -1: REFUTED, 0: INCONCLUSIVE}[shifted.sign], error


def claim2_comparison(reference: Group, candidate: Group) -> Comparison:
    """Claim 2, for one pair of settings of a sweep, paired by seed (a seed counts when both runs
    completed). Premise: the candidate approximates W1 better than the reference: by construction when it
    trains on the minibatch W1 itself (`exact_ot`) or on its entropic version (`sinkhorn`), otherwise when
    the 95% interval of the paired difference of `critic_rel_error` (reference − candidate; per run the
    mean over the second half of training) lies above 0. The comparison holds when the premise is met and
    the candidate's samples are worse on both quality measures: the 95% intervals of the paired
    differences of final `fid` (candidate − reference) and of final `sharpness` (reference − candidate)
    both lie above 0; it is refuted when the premise is met and both lie below 0 (the better
    approximation gives better and sharper samples); otherwise, or when the premise is not met or fewer
    than 2 seeds pair up, it is inconclusive."""
    premise = None
    if candidate.name not in NO_CRITIC:
        premise = paired(candidate.by_seed("critic_rel_error"), reference.by_seed("critic_rel_error"))
    deltas = {
        "fid": paired(reference.by_seed("fid"), candidate.by_seed("fid")),
        "sharpness": paired(candidate.by_seed("sharpness"), reference.by_seed("sharpness")),
    }
    worse = {d.sign for d in deltas.values()}
    seeds = min(d.n for d in deltas.values())
    if seeds < 2:
        return Comparison(reference.name, candidate.name, premise, deltas, INCONCLUSIVE, "fewer than 2 seeds")
    if premise is not None and premise.sign != 1:
        return Comparison(reference.name, candidate.name, premise, deltas, INCONCLUSIVE, "premise not met")
    verdict = HOLDS if worse == {1} else REFUTED if worse == {-1} else INCONCLUSIVE
    return Comparison(reference.name, candidate.name, premise, deltas, verdict)


def claim4_comparison(reference: Group, candidate: Group) -> Comparison:
    """Claim 4, WGAN-GP (reference) against a c-transform critic (candidate), paired by seed (a seed counts
    when both runs completed), on the paired differences candidate − reference of final `fid` and of
    `grad_ot_cosine` (per run the mean over the second half of training: how well the critic's gradient
    at the generated images points to their partners in the exact OT plan). It holds when the 95%
    intervals of both lie above 0: WGAN-GP gives the better samples while its gradient field is further
    from the transport directions. It is refuted when both intervals exclude 0 with opposite signs: the
    objective with the better samples is the one whose field is closer to the transport directions.
    Otherwise, or when fewer than 2 seeds pair up, it is inconclusive."""
    deltas = {
        "fid": paired(reference.by_seed("fid"), candidate.by_seed("fid")),
        "grad_ot_cosine": paired(reference.by_seed("grad_ot_cosine"), candidate.by_seed("grad_ot_cosine")),
    }
    fid, cosine = deltas["fid"].sign, deltas["grad_ot_cosine"].sign
    if min(d.n for d in deltas.values()) < 2:
        return Comparison(reference.name, candidate.name, None, deltas, INCONCLUSIVE, "fewer than 2 seeds")
    verdict = HOLDS if fid == cosine == 1 else REFUTED if fid * cosine == -1 else INCONCLUSIVE
    return Comparison(reference.name, candidate.name, None, deltas, verdict)


@dataclass
class CentroidsRow:
    """Claim 3 at one batch size: paired differences over draws and the verdict."""

    n: int
    draws: int
    centroids_w1: Interval
    real_w1: Interval
    w1_margin: Interval  # W1(x, y) - W1(C, y): above 0 when the centroids are closer
    w2_margin: Interval
    closer_share: float  # draws with W1(C, y) < W1(x, y)
    verdict: str


def claim3_verdict(n: int, values: dict[str, list[float]]) -> CentroidsRow:
    """Claim 3 holds at a batch size n when the 95% Student-t interval over draws of the paired difference
    W1(x, y) − W1(C, y) lies entirely above 0: the n k-means centroids C of the training images (k = n)
    are closer in exact W1 to a batch y of n held-out real images than a batch x of n real training
    images is, although no centroid is a real image. It is refuted at n when the interval lies entirely
    below 0 (the real batch is closer), and inconclusive when it contains 0 or fewer than 2 draws were
    made. The batch sizes combine as the settings of the other claims do."""
    from experiments.centroids import CENTROIDS_W1, CENTROIDS_W2, REAL_W1, REAL_W2

    c1, r1 = np.asarray(values[CENTROIDS_W1], float), np.asarray(values[REAL_W1], float)
    c2, r2 = np.asarray(values[CENTROIDS_W2], float), np.asarray(values[REAL_W2], float)
    margin = interval(r1 - c1)
    verdict = {1: HOLDS, -1: REFUTED, 0: INCONCLUSIVE}[margin.sign]
    closer = float(np.mean(c1 < r1)) if len(c1) else math.nan
    return CentroidsRow(n, len(c1), interval(c1), interval(r1), margin, interval(r2 - c2), closer, verdict)


def claim3_rows(result: dict | None) -> list[CentroidsRow]:
    """:func:`claim3_verdict` at each batch size of an experiments.centroids result (none without one)."""
    if not result:
        return []
    return [claim3_verdict(int(n), v) for n, v in sorted(result["values"].items(), key=lambda kv: int(kv[0]))]


def combine(verdicts) -> str:
    """Several verdicts on one claim (comparisons within a setting, or settings) combine to holds when at
    least one holds and none is refuted, to refuted when at least one is refuted and none holds, and to
    inconclusive otherwise (none decisive, or decisive ones that disagree)."""
    found = set(verdicts)
    if HOLDS in found and REFUTED not in found:
        return HOLDS
    if REFUTED in found and HOLDS not in found:
        return REFUTED
    return INCONCLUSIVE


def criterion(fn: Callable) -> str:
    """A criterion's docstring as one paragraph of the page (the code and the page say the same)."""
    return " ".join(inspect.getdoc(fn).split())


def claim2_comparisons(sweep: Sweep) -> list[Comparison]:
    """Objectives sweeps: WGAN-GP against each other objective. Critic-steps sweeps: every pair of
    settings, fewer critic steps as the reference."""
    if sweep.role == "critic_steps":
        groups = sweep.groups
        return [claim2_comparison(a, b) for i, a in enumerate(groups) for b in groups[i + 1 :]]
    reference = sweep.group(REFERENCE)
    if reference is None:
        return []
    return [claim2_comparison(reference, g) for g in sweep.groups if g.name != REFERENCE]


def claim4_comparisons(sweep: Sweep) -> list[Comparison]:
    reference = sweep.group(REFERENCE)
    if reference is None:
        return []
    return [claim4_comparison(reference, g) for g in sweep.groups if g.name in C_TRANSFORMS]


# ---------------------------------------------------------------------------------------------------------
# Figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _curve(runs: list[Run], key: str) -> tuple[list[int], list[float]]:
    """Mean of ``key`` over ``runs`` at each step: from curves.jsonl where a run logs it there (every
    ``eval.curve_every`` steps), otherwise from its evaluations."""
    at: dict[int, list[float]] = {}
    for r in runs:
        dense = [row for row in r.curves if key in row]
        for row in dense or r.rows:
            if isinstance(row.get(key), int | float) and math.isfinite(row[key]):
                at.setdefault(row["step"], []).append(row[key])
    steps = sorted(at)
    return steps, [float(np.mean(at[s])) for s in steps]


CURVES = (
    ("w1_exact", "tab:blue", "exact W1"),
    ("critic_estimate", "tab:red", "critic estimate"),
    ("probe_estimate", "tab:orange", "probe (critic trained on)"),
    ("w1_real_real", "tab:gray", "real-vs-real W1"),
)


def figure_critic_vs_w1(panels: list[tuple[str, list[Run]]]) -> bytes | None:
    """Claim 1: per setting, the WGAN-GP critic's estimate beside the exact and real-vs-real W1 over steps
    (thin: seeds; thick: their mean)."""
    panels = [(t, [r for r in runs if r.rows]) for t, runs in panels]
    panels = [(t, runs) for t, runs in panels if runs]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 3.8), squeeze=False)
    for ax, (title, runs) in zip(axes[0], panels, strict=True):
        for key, color, label in CURVES:
            for r in runs:
                ax.plot(*_curve([r], key), color=color, alpha=0.3, linewidth=0.8)
            steps, mean = _curve([r for r in runs if r.completed] or runs, key)
            if steps:
                marker = "o" if len(steps) <= 12 else None
                ax.plot(steps, mean, color=color, linewidth=2, marker=marker, markersize=3, label=label)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("WGAN-GP: critic estimate against the exact W1 of the same minibatches", fontsize=10)
    fig.tight_layout()
    return _png(plt, fig)


def figure_cosine(panels: list[tuple[str, list[Group]]]) -> bytes | None:
    """Claim 4: grad_ot_cosine over training, one line per objective (mean over completed seeds)."""
    panels = [(t, [g for g in groups if g.has_critic()]) for t, groups in panels]
    panels = [(t, groups) for t, groups in panels if groups]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 3.6), squeeze=False)
    for ax, (title, groups) in zip(axes[0], panels, strict=True):
        for g in groups:
            steps, mean = _curve(g.completed, "grad_ot_cosine")
            if steps:
                ax.plot(steps, mean, marker="o", markersize=3, label=g.name)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("generator step")
        ax.set_ylabel("grad_ot_cosine")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("cosine between -∇f at generated images and the direction to their OT partners", fontsize=10)
    fig.tight_layout()
    return _png(plt, fig)


def figure_quality(sweep: Sweep) -> bytes | None:
    """Final FID and sharpness against critic_rel_error, one point per completed run; objectives without
    a critic (no estimate to be wrong) as dashed lines at their mean."""
    plt = _pyplot()
    keys = [k for k in ("fid", "sharpness") if any(g.by_seed(k) for g in sweep.groups)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes[0], keys, strict=True):
        for i, g in enumerate(sweep.groups):
            color = colors[i % len(colors)]
            label = g.name if sweep.role == "objectives" else f"{g.name} critic steps"
            quality, error = g.by_seed(key), g.by_seed("critic_rel_error")
            points = [(error[s], quality[s]) for s in quality if s in error]
            if points:
                ax.scatter(*zip(*points, strict=True), color=color, label=label)
            elif quality:
                ax.axhline(float(np.mean(list(quality.values()))), color=color, linestyle="--", label=label)
        ax.set_xlabel("critic_rel_error (mean over the second half of training)")
        ax.set_ylabel(f"final {key}" + (" (lower is better)" if key == "fid" else " (1: as sharp as real)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"sample quality against how well the critic estimates W1: {sweep.label()}", fontsize=9)
    fig.tight_layout()
    return _png(plt, fig)


def _image_grid(path: Path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def figure_samples(sweep: Sweep, n: int) -> bytes | None:
    """Real held-out images, then generated ones of each setting (its first completed seed), side by side,
    drawn from each run's last checkpoint (experiments.sample)."""
    from hydra.utils import instantiate
    from torchvision.utils import save_image

    from experiments.sample import sample_run
    from gan.evaluation import eval_generator
    from gan.finished import read_run_config
    from gan.image_eval import is_image_data, sample_grid

    runs = [(g.name, g.completed[0]) for g in sweep.groups if g.completed]
    if not runs:
        return None
    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        first = runs[0][1]
        data = instantiate(read_run_config(first.path).data)
        if not is_image_data(data):
            return None
        real = data.sample_heldout(n, eval_generator(first.seed, 0, "cpu"))
        save_image(sample_grid(real, value_range=data.pixel_range), Path(tmp) / "real.png")
        tiles.append(("real (held out)", _image_grid(Path(tmp) / "real.png")))
        for name, run in runs:
            label = name if sweep.role == "objectives" else f"{name} critic steps"
            try:
                out = sample_run(run.path, n=n, out=Path(tmp) / f"{len(tiles)}.png", device="cpu")
            except ConfigError as exc:  # e.g. a completed run whose checkpoint was deleted
                log.warning("%s: no samples of %s (%s)", sweep.preset, run.path, exc)
                continue
            tiles.append((f"{label} (seed {run.seed})", _image_grid(out)))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tiles), figsize=(2.4 * len(tiles), 2.7), squeeze=False)
    for ax, (title, image) in zip(axes[0], tiles, strict=True):
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.suptitle(sweep.label(), fontsize=8)
    fig.tight_layout()
    return _png(plt, fig)


# ---------------------------------------------------------------------------------------------------------
# The page


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(headers) - 1)
    return ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"] + [
        "| " + " | ".join(map(str, row)) + " |" for row in rows
    ]


def _verdict(word: str) -> str:
    return f"**{word}**"


def _group_table(sweep: Sweep, groups: list[Group], keys) -> list[str]:
    name = "objective" if sweep.role == "objectives" else "critic steps"
    rows = [[f"`{g.name}`" if sweep.role == "objectives" else g.name, g.status_cell(), str(len(g.completed))]
            + [g.interval(k).cell() for k in keys] for g in groups]  # fmt: skip
    return _table([name, "runs", "completed", *[f"`{k}`" for k in keys]], rows)


def _comparison_table(
    comparisons: list[Comparison], role: str, keys: dict[str, str], *, premise: bool
) -> list[str]:
    """One row per comparison: the paired seeds, the premise (when asked), the paired differences of
    ``keys`` (``{key: column title}``) and the verdict."""

    def label(name):
        return f"`{name}`" if role == "objectives" else f"{name} steps"

    headers = ["comparison", "paired seeds"]
    headers += ["premise: `critic_rel_error`, reference − candidate"] if premise else []
    headers += [*keys.values(), "verdict"]
    rows = []
    for c in comparisons:
        row = [f"{label(c.candidate)} (candidate) vs {label(c.reference)}", str(c.seeds)]
        if premise:
            row.append("by construction" if c.premise is None else c.premise.cell())
        row += [c.deltas[k].cell() for k in keys]
        rows.append([*row, _verdict(c.verdict) + (f" ({c.note})" if c.note else "")])
    return _table(headers, rows)


def _failures(sweeps: list[Sweep]) -> list[str]:
    lines = []
    for s in sweeps:
        for r in s.runs:
            if not r.completed:
                where = r.path.relative_to(s.folder).as_posix()
                lines.append(f"- `{s.preset}/{where}`: {r.status}")
        if not s.runs:
            lines.append(f"- `{s.preset}`: no run folders")
    return lines


def machine_line(cfg: DictConfig) -> str:
    from scripts.page import machine

    if cfg.launcher:
        launcher = " ".join(cfg.launcher)
    else:
        launcher = f"joblib, {cfg.n_jobs} jobs at a time" if cfg.n_jobs > 1 else "basic, one job at a time"
    return (
        f"Machine: {machine()}; every job with `train.threads=1` (`OMP_NUM_THREADS=1`); Hydra "
        f"launcher: {launcher}."
    )


def render(
    cfg: DictConfig,
    command: str,
    sweeps: list[Sweep],
    figures: dict[str, str],
    timing: str | None,
    centroids: dict | None = None,
) -> str:
    """The section of the page, from the loaded sweeps, claim 3's experiments.centroids result and the
    figure links (``{name: relative path}``)."""
    objectives = [s for s in sweeps if s.role == "objectives"]
    steps = [s for s in sweeps if s.role == "critic_steps"]
    lines = [
        "## Claims 1 to 4 on images, computed from the runs",
        "",
        f"Written by `{command}` from the run folders below `{cfg.out}` (budget `{cfg.budget}`); the "
        "tables, figures and verdict words are computed, and rerunning the command rewrites this section. "
        "Each cell is the mean ± the half-width of the 95% Student-t interval over the completed seeds. "
        "Quality keys (`fid`, `sharpness`, `precision`, `recall`) are the final evaluation's; the keys "
        "measured on a pair of minibatches are per run the mean over the evaluations of the second half "
        "of training. `sharpness`: mean image-gradient energy of generated images over that of held-out "
        "real ones (1: as sharp as real data, towards 0 as images blur).",
        "",
        machine_line(cfg),
    ]
    if timing:
        lines.append(timing)
    lines += ["", "| sweep | setting | runs | completed |", "|---|---|---:|---:|"]
    for s in sweeps:
        lines.append(f"| `{s.preset}` | {s.label()} | {len(s.runs)} | {sum(r.completed for r in s.runs)} |")
    failures = _failures(sweeps)
    if failures:
        lines += ["", "Not completed (left out of every number):", "", *failures]

    # Claim 1.
    lines += ["", "### Claim 1: the WGAN-GP critic's estimate against the exact W1 of its batches", ""]
    lines += [f"*Criterion.* {criterion(claim1_verdict)}", ""]
    rows, verdicts = [], []
    for s in objectives:
        g = s.group(REFERENCE)
        if g is None:
            continue
        verdict, _ = claim1_verdict(g)
        verdicts.append((s.label(), verdict))
        rows.append([s.label(), g.status_cell(), str(len(g.completed))]
                    + [g.interval(k).cell() for k in CLAIM1_KEYS] + [_verdict(verdict)])  # fmt: skip
    lines += _table(["setting", "runs", "completed", *[f"`{k}`" for k in CLAIM1_KEYS], "verdict"], rows)
    if "critic_vs_w1" in figures:
        lines += ["", f"![critic estimate against exact and real-vs-real W1]({figures['critic_vs_w1']})"]
    lines += ["", _verdict_line(verdicts)]

    # Claim 2, across objectives and inside WGAN-GP.
    lines += ["", "### Claim 2: approximating W1 better against sample quality", ""]
    lines += [f"*Criterion.* {criterion(claim2_comparison)} {criterion(combine)}"]
    verdicts = []
    quality_keys = {"fid": "`fid`, candidate − reference", "sharpness": "`sharpness`, reference − candidate"}
    for s in objectives + steps:
        title = "across objectives" if s.role == "objectives" else "inside WGAN-GP, by critic steps"
        lines += ["", f"#### {s.label()}: {title}", ""]
        lines += _group_table(s, s.groups, CLAIM2_KEYS)
        comparisons = claim2_comparisons(s)
        lines += ["", *_comparison_table(comparisons, s.role, quality_keys, premise=True)]
        for key in (f"samples_{s.preset}", f"quality_{s.preset}"):
            if key in figures:
                lines += ["", f"![{key.split('_')[0]}: {s.label()}]({figures[key]})"]
        verdict = combine(c.verdict for c in comparisons)
        verdicts.append((f"{s.label()}, {title}", verdict))
        lines += ["", f"Verdict for this setting: {_verdict(verdict)}."]
    lines += ["", _verdict_line(verdicts)]

    # Claim 3.
    lines += ["", "### Claim 3: minibatch W1 as a measure of quality", ""]
    lines += _claim3_lines(cfg, centroids, figures)

    # Claim 4.
    lines += ["", "### Claim 4: the gradient field, not the distance", ""]
    lines += [f"*Criterion.* {criterion(claim4_comparison)} {criterion(combine)}"]
    verdicts = []
    for s in objectives:
        comparisons = claim4_comparisons(s)
        if not comparisons:
            continue
        groups = [g for g in s.groups if g.name == REFERENCE or g.name in C_TRANSFORMS]
        lines += ["", f"#### {s.label()}", "", *_group_table(s, groups, CLAIM4_KEYS), ""]
        keys = {
            "fid": "`fid`, candidate − reference",
            "grad_ot_cosine": "`grad_ot_cosine`, candidate − reference",
        }
        lines += _comparison_table(comparisons, s.role, keys, premise=False)
        verdict = combine(c.verdict for c in comparisons)
        verdicts.append((s.label(), verdict))
        lines += ["", f"Verdict for this setting: {_verdict(verdict)}."]
    if "grad_ot_cosine" in figures:
        lines += ["", f"![grad_ot_cosine over training]({figures['grad_ot_cosine']})"]
    lines += ["", _verdict_line(verdicts)]
    return "\n".join(lines) + "\n"


def _claim3_lines(cfg: DictConfig, result: dict | None, figures: dict[str, str]) -> list[str]:
    lines = [f"*Criterion.* {criterion(claim3_verdict)} {criterion(combine)}", ""]
    if not result:
        folder = Path(str(cfg.out)) / CENTROIDS_FOLDER
        return [*lines, f"No experiments.centroids result in `{folder}`.", "", _verdict_line([])]
    capped = result.get("kmeans_capped", 0)
    lines += [
        f"`{shlex.join(['python', '-m', 'experiments.centroids', *centroids_overrides(cfg)])}`"
        f" on {result['data']} (d = {result['dim']}, {result['num_train']} training images): k-means with "
        f"k = n on the whole training split, x drawn from the training split, y from the "
        f"{result['reference']} split; {result['draws']} draws per n, seed {result['seed']}"
        + (f"; {capped} k-means runs stopped at `kmeans.max_iter` before converging." if capped else "."),
        "",
    ]
    rows = claim3_rows(result)
    lines += _table(
        ["n", "draws", "W1(C, y)", "W1(x, y)", "W1(x, y) − W1(C, y)", "W2(x, y) − W2(C, y)",
         "centroids closer (W1)", "verdict"],
        [[str(r.n), str(r.draws), r.centroids_w1.cell(), r.real_w1.cell(), r.w1_margin.cell(),
          r.w2_margin.cell(), f"{r.closer_share:.0%}", _verdict(r.verdict)] for r in rows],
    )  # fmt: skip
    if "centroids" in figures:
        lines += [
            "",
            f"![k-means centroids beside real images, and the distances against n]({figures['centroids']})",
        ]
    return [*lines, "", _verdict_line([(f"n = {r.n}", r.verdict) for r in rows])]


def _verdict_line(verdicts: list[tuple[str, str]]) -> str:
    if not verdicts:
        return f"**Verdict: {INCONCLUSIVE}** (no runs to judge)."
    parts = "; ".join(f"{label}: {word}" for label, word in verdicts)
    return f"**Verdict: {combine(w for _, w in verdicts)}** ({parts})."


# ---------------------------------------------------------------------------------------------------------
# The command


def _check(cfg: DictConfig) -> None:
    if cfg.budget not in cfg.budgets:
        raise ConfigError(f"budget={cfg.budget}: choose one of {', '.join(cfg.budgets)}")
    if not (isinstance(cfg.n_jobs, int) and cfg.n_jobs >= 1):
        raise ConfigError(f"n_jobs={cfg.n_jobs!r}: must be a positive integer")
    if cfg.seeds is not None and not (
        OmegaConf.is_list(cfg.seeds) and cfg.seeds and all(isinstance(x, int) and x >= 0 for x in cfg.seeds)
    ):
        raise ConfigError(f"seeds={cfg.seeds!r}: must be null or a list of integers >= 0, e.g. [0,1]")
    if not (isinstance(cfg.samples, int) and cfg.samples >= 1):
        raise ConfigError(f"samples={cfg.samples!r}: must be a positive integer")
    presets = group_options("experiment")
    for role, names in cfg.budgets[cfg.budget].items():
        if role == "centroids":  # claim 3: overrides of experiments.centroids, checked by that command
            if not (names is None or OmegaConf.is_list(names)):
                raise ConfigError(
                    f"budgets.{cfg.budget}.centroids: must be a list of overrides, e.g. [data=mnist5k]"
                )
            continue
        if role not in ROLES:
            raise ConfigError(f"budgets.{cfg.budget}.{role}: not a role; use {', '.join(ROLES)} or centroids")
        for name in names:
            if name not in presets:
                raise ConfigError(f"budgets.{cfg.budget}.{role}: {name} is not a preset in conf/experiment/")


def claims(cfg: DictConfig, command: str) -> Path:
    """Run the sweeps of ``cfg.budget`` (unless ``cfg.run`` is false), then write the section and the
    figures; returns the results page."""
    from scripts.page import figure, write_section

    _check(cfg)
    started = time.perf_counter()
    out, results, images = (Path(str(p)).expanduser().absolute() for p in (cfg.out, cfg.results, cfg.images))
    out.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    sweeps = []
    for role, presets in cfg.budgets[cfg.budget].items():
        if role == "centroids":
            continue
        for preset in presets:
            seconds = run_sweep(preset, out / preset, out / f"{preset}.log", cfg) if cfg.run else None
            sweep = load_sweep(role, preset, out / preset)
            sweep.seconds = seconds
            sweeps.append(sweep)

    figures: dict[str, str] = {}
    prefix = f"claims_{cfg.budget}"

    def save(name: str, draw: Callable[..., bytes | None], *args) -> None:
        """Write the figure ``draw(*args)`` draws; one that cannot be drawn is left out of the page with a
        warning (the runs are kept: ``run=false`` draws it again)."""
        try:
            png = draw(*args)
        except Exception as exc:
            log.warning("figure %s not drawn: %s: %s", name, type(exc).__name__, exc)
            return
        if png is not None:
            figures[name] = figure(results, f"{prefix}_{name}", png, images)

    objectives = [s for s in sweeps if s.role == "objectives"]
    wgan_gp = [(s.label(), s.group(REFERENCE).runs) for s in objectives if s.group(REFERENCE)]
    save("critic_vs_w1", figure_critic_vs_w1, wgan_gp)
    save("grad_ot_cosine", figure_cosine, [(s.label(), s.groups) for s in objectives])
    for s in sweeps:
        save(f"samples_{s.preset}", figure_samples, s, cfg.samples)
        save(f"quality_{s.preset}", figure_quality, s)

    centroids, centroids_seconds = None, None
    if cfg.budgets[cfg.budget].get("centroids") is not None:  # null: no claim 3 in this budget
        folder = out / CENTROIDS_FOLDER
        if cfg.run:
            centroids_seconds = run_centroids(folder, out / f"{CENTROIDS_FOLDER}.log", cfg)
        centroids = load_centroids(folder)
        if (folder / "centroids.png").is_file():
            save("centroids", lambda: (folder / "centroids.png").read_bytes())

    timing = None
    if cfg.timings:
        spent = [(f"`{s.preset}`", s.seconds) for s in sweeps]
        spent += [("claim 3's `experiments.centroids`", centroids_seconds)] if centroids is not None else []
        spent = ", ".join(
            f"{name} {'reused' if sec is None else f'{sec / 60:.1f} min'}" for name, sec in spent
        )
        timing = (
            f"{TIMING_PREFIX}: {(time.perf_counter() - started) / 60:.1f} min in all ({spent}), "
            f"finished {time.strftime('%Y-%m-%d %H:%M %Z')}."
        )
    write_section(results, SECTION, render(cfg, command, sweeps, figures, timing, centroids))
    log.info("wrote the %s section of %s", SECTION, results)
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="claims")
def main(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    command = shlex.join([*COMMAND.split(), *overrides])
    try:
        path = claims(cfg, command)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    main()
