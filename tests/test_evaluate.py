"""Finished runs: intervals over several draws, re-evaluation from a checkpoint, samples, and the errors."""

import csv
import hashlib
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from experiments.evaluate import evaluate_run
from experiments.sample import sample_run
from gan.config import ConfigError
from gan.evaluation import PER_DRAW_KEYS, evaluate
from gan.runlog import tb_tag
from gan.trainer import train
from metrics.known import translation_vector, uniform_box
from metrics.stats import t_interval
from scripts.summarize import summarize
from tests.conftest import compose_train, run_module

# ---------------------------------------------------------------------------------------------------
# The interval


def test_t_interval_matches_the_closed_forms():
    # One degree of freedom: t is Cauchy, quantile tan(pi (p - 1/2)); values 0, 2 have mean 1, s/sqrt(n) = 1.
    mean, half = t_interval([0.0, 2.0])
    assert mean == 1.0 and half == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    # Two degrees of freedom: quantile (2p - 1) / sqrt(2 p (1 - p)); values 1, 2, 6: s^2 = 7, n = 3.
    p = 0.975
    mean, half = t_interval([1.0, 2.0, 6.0])
    assert mean == 3.0
    assert half == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)) * math.sqrt(7 / 3), rel=1e-12)
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.0)
    assert math.isnan(t_interval([1.0, math.inf])[1])
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        t_interval([1.0, 2.0], level=1.0)


def _within_binomial(hits: int, reps: int, level: float = 0.95, z: float = 3.5) -> bool:
    return abs(hits / reps - level) <= z * math.sqrt(level * (1 - level) / reps)


def test_t_interval_covers_the_mean_at_its_nominal_rate():
    # Normal draws: the t interval's coverage is exactly 95% for every n. The normal-quantile interval
    # (1.96 s / sqrt(n)) would cover about 88% with 5 draws, far outside the tolerance.
    rng = np.random.default_rng(0)
    reps, true_mean = 4000, 1.5
    hits = 0
    for _ in range(reps):
        mean, half = t_interval(rng.normal(true_mean, 2.0, size=5))
        hits += abs(mean - true_mean) <= half
    assert _within_binomial(hits, reps), hits / reps


class _Translated:
    """Real data ``Q = P + m`` with ``P`` uniform on the box ``[-1, 1]^2``: W1(P, Q) = |m| exactly."""

    shape = (2,)

    def __init__(self, m):
        self.m = m

    def sample(self, n, generator):
        return uniform_box(n, dim=2, box=1.0, generator=generator) + self.m

    sample_heldout = sample


class _BoxGenerator(nn.Module):
    """``P``: uniform on ``[-1, 1]^2`` from a standard normal latent (its CDF is uniform)."""

    latent_dim = 2

    def forward(self, z):
        return 2 * torch.special.ndtr(z) - 1


class _Potential(nn.Module):
    """The optimal critic u(x) = <x, m> / |m| of the translation problem."""

    def __init__(self, m):
        super().__init__()
        self.register_buffer("direction", m / m.norm())

    def forward(self, x):
        return x @ self.direction


def test_evaluation_interval_covers_the_known_w1(compose_cfg):
    # With the optimal critic, each draw's critic_estimate (mean u(x) - mean u(y) over independent
    # batches) has expectation W1 = |m| exactly, unlike the upward-biased minibatch w1_exact. So the
    # interval evaluate() logs beside its mean over the draws must cover |m| at about 95%.
    cfg = compose_cfg("eval.draws=4", "eval.batch_size=12", "eval.large_n=8", "eval.probe_steps=0")
    m = translation_vector(2, 0.5)
    data, generator, critic = _Translated(m), _BoxGenerator(), _Potential(m)
    objective = instantiate(cfg.objective)
    reps, hits, w1_above = 200, 0, 0
    for rep in range(reps):
        rng = torch.Generator().manual_seed(rep)
        row = evaluate(generator, critic, data, objective, cfg.eval, rng=rng, index=0)
        hits += abs(row["critic_estimate"] - 0.5) <= row["critic_estimate_ci95"]
        w1_above += row["w1_exact"] > 0.5
        assert row["ctransform_bound"] <= row["w1_exact"] + 1e-9
    assert _within_binomial(hits, reps), hits / reps
    assert w1_above == reps  # the minibatch W1 of 12 points sits above the truth: the bias it measures


# ---------------------------------------------------------------------------------------------------
# Runs to evaluate (trained once for the module)


_compose = compose_train


def _train(run_dir, *overrides):
    """A tiny run with the ``.hydra/`` files Hydra would have written."""
    cfg = _compose(*overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")
    assert train(cfg, run_dir)["status"] == "completed"
    return run_dir


RUNS = {
    # eval.probe_every=2: the last evaluation (step 6, index 2) runs the probe
    "wgan_gp": ["objective=wgan_gp", "eval.probe_every=2"],
    "wgan_sn": ["objective=wgan_sn"],  # power-iteration state in the checkpoint
    "exact_ot": ["objective=exact_ot"],  # no critic
    "ctransform": ["objective=ctransform"],  # the critic's value on generated points is f^c
    "digits": ["data=digits", "model=mlp", "eval.batch_size=16"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {name: _train(root / name, *overrides) for name, overrides in RUNS.items()}


@pytest.fixture
def run_copy(runs, tmp_path):
    """``run_copy(name)``: a copy of a trained run folder that a test may change."""

    def _copy(name):
        return shutil.copytree(runs[name], tmp_path / "runs" / name)

    return _copy


def _last_row(run_dir):
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def _snapshot(folder):
    """Every file below ``folder`` with its hash (folders as None)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


# ---------------------------------------------------------------------------------------------------
# Re-evaluation


@pytest.mark.parametrize("name", list(RUNS))
def test_reevaluating_with_the_training_settings_reproduces_the_last_line(run_copy, name):
    run_dir = run_copy(name)
    before = _snapshot(run_dir)
    out, record = evaluate_run(run_dir)
    assert out == run_dir / "evaluations" / "default.json"
    written = json.loads(out.read_text())
    last = _last_row(run_dir)
    assert written["step"] == last.pop("step") == 6
    assert written["metrics"] == last  # exactly: same batches, same models, same order of draws
    assert not [k for k in written["metrics"] if k.endswith("_ci95")]
    assert written["checkpoint"] == "checkpoints/last.pt" and written["overrides"] == []
    if name == "wgan_gp":
        assert "probe_estimate" in last
    # Only the new file: metrics.jsonl, summary.json and the rest are untouched.
    assert _snapshot(run_dir) == before | {"evaluations": None, "evaluations/default.json": _hash(out)}


def _hash(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_more_draws_log_intervals_and_keep_the_first_draw(run_copy):
    run_dir = run_copy("wgan_gp")
    one = _last_row(run_dir)
    out, record = evaluate_run(run_dir, ["eval.draws=6"])
    assert out.name == "eval.draws=6.json" and record["eval"]["draws"] == 6
    row = record["metrics"]
    ci = {k for k in row if k.endswith("_ci95")}
    assert ci == {f"{k}_ci95" for k in PER_DRAW_KEYS if k in one}
    assert all(math.isfinite(row[k]) and row[k] > 0 for k in ci)
    # Measured once, on the first draw, which is the one-draw evaluation.
    for key in ("w1_large", "modes_covered", "high_quality_frac", "probe_estimate", "probe_gap"):
        assert row[key] == one[key]
    assert isinstance(row["ot_nonoptimal"], int)
    # Means of per-draw quantities keep their relations; the first draw is a plausible member.
    assert row["w1_exact"] <= row["w2_exact"] and row["ctransform_bound"] <= row["w1_exact"]
    assert row["critic_gap"] == pytest.approx(row["critic_estimate"] - row["w1_exact"], abs=1e-12)
    # The first draw is one of the 6, so it lies at most 5 s / sqrt(6) from their mean (s their sample sd),
    # and the half-width is t(0.975, 5) s / sqrt(6): the distance is at most 1.945 half-widths.
    for key in ("w1_exact", "w1_real_real", "critic_estimate", "lipschitz_max"):
        assert abs(one[key] - row[key]) <= 1.95 * row[f"{key}_ci95"]


def test_summarize_reads_evaluations_as_columns(run_copy):
    run_dir = run_copy("exact_ot")
    evaluate_run(run_dir, ["eval.draws=3", "eval.batch_size=16"])
    result = summarize(run_dir.parent)
    with (run_dir.parent / "summary.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    stem = "eval.batch_size=16,eval.draws=3"
    record = json.loads((run_dir / "evaluations" / f"{stem}.json").read_text())
    assert float(row[f"{stem}.w1_exact"]) == record["metrics"]["w1_exact"]
    assert float(row[f"{stem}.w1_exact_ci95"]) == record["metrics"]["w1_exact_ci95"]
    assert not [
        c for c in row if c.startswith(f"{stem}.eval.") or c == f"{stem}.step"
    ]  # settings are no metrics
    assert result["runs"][0].final["w1_exact"] == _last_row(run_dir)["w1_exact"]


def test_an_other_checkpoint_and_a_name(run_copy, tmp_path):
    run_dir = run_copy("wgan_gp")
    other = shutil.copy(run_dir / "checkpoints" / "last.pt", tmp_path / "elsewhere.pt")
    out, record = evaluate_run(run_dir, checkpoint=other)
    assert out.name == "step6_default.json" and record["checkpoint"] == str(Path(other).resolve())
    out, _ = evaluate_run(run_dir, ["eval.solver=emd"], name="with emd/pot")
    assert out == run_dir / "evaluations" / "with_emd_pot.json"


def test_tensorboard_tags_of_intervals_and_inception():
    assert tb_tag("w1_exact_ci95") == "ot/w1_exact_ci95"
    assert tb_tag("critic_estimate_ci95") == "critic/estimate_ci95"
    assert tb_tag("fid_inception") == "quality/fid_inception"


def test_missing_inception_weights_stop_training_and_evaluation_in_one_line(tmp_path, run_copy):
    run_dir = tmp_path / "train"
    run_dir.mkdir()
    cfg = _compose("data=digits", "model=mlp", f"eval.inception_weights={tmp_path / 'missing.pth'}")
    with pytest.raises(ConfigError, match="^eval.inception_weights: .*missing.pth") as info:
        train(cfg, run_dir)
    assert "\n" not in str(info.value) and list(run_dir.iterdir()) == []
    digits = run_copy("digits")
    before = _snapshot(digits)
    with pytest.raises(ConfigError, match="missing.pth"):
        evaluate_run(digits, [f"eval.inception_weights={tmp_path / 'missing.pth'}"])
    assert _snapshot(digits) == before


def test_unusable_input_fails_before_writing(run_copy, tmp_path):
    run_dir = run_copy("wgan_gp")
    before = _snapshot(run_dir)
    cases = [
        (lambda: evaluate_run(tmp_path), "is not a run folder"),
        (lambda: evaluate_run(run_dir, ["model.critic.width=3"]), "cannot change model.critic.width"),
        (
            lambda: evaluate_run(run_dir, ["eval.probe_every=-1"]),
            "eval.probe_every=-1: must be an integer >= 0",
        ),
        (
            lambda: evaluate_run(run_dir, ["eval.batch_size=0"]),
            "eval.batch_size=0: must be a positive integer",
        ),
        (lambda: sample_run(run_dir, n=0), "n=0: must be a positive integer"),
        (lambda: sample_run(run_dir, out="x.jpg"), "must name a .png file"),
    ]
    truncated, corrupt = tmp_path / "truncated.pt", tmp_path / "corrupt.pt"
    truncated.write_bytes((run_dir / "checkpoints" / "last.pt").read_bytes()[:2000])
    corrupt.write_bytes(b"not a checkpoint")
    unreadable = "cannot be read (truncated or corrupt?)"
    for bad in (truncated, corrupt):
        cases.append((lambda bad=bad: evaluate_run(run_dir, checkpoint=bad), unreadable))
        cases.append((lambda bad=bad: sample_run(run_dir, checkpoint=bad), unreadable))
    other = run_copy("exact_ot") / "checkpoints" / "last.pt"  # a checkpoint of other models
    cases.append((lambda: evaluate_run(run_dir, checkpoint=other), "does not fit the models of this run"))
    for call, message in cases:
        with pytest.raises(ConfigError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value)
    assert _snapshot(run_dir) == before


# ---------------------------------------------------------------------------------------------------
# Samples


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def test_sample_writes_a_png_of_the_expected_size(runs, run_copy):
    toy = run_copy("wgan_gp")
    path = sample_run(toy, n=64)
    assert path == toy / "samples_step6_n64.png" and _png_size(path) == (500, 500)  # 5 x 5 in at 100 dpi
    first = path.read_bytes()
    assert sample_run(toy, n=64).read_bytes() == first  # deterministic
    other = sample_run(toy, n=64, seed=5)
    assert other.name == "samples_step6_n64_seed5.png" and other.read_bytes() != first
    assert _png_size(sample_run(run_copy("exact_ot"), n=32)) == (500, 500)  # no critic: no contour
    digits = run_copy("digits")
    # 10 images of 8 x 8: 4 per row, 3 rows, 2-pixel padding around each.
    assert _png_size(sample_run(digits, n=10)) == (4 * 10 + 2, 3 * 10 + 2)


# ---------------------------------------------------------------------------------------------------
# The command lines


def _cli(module, *args, cwd):
    return run_module(module, *args, cwd=cwd)


@pytest.mark.slow
def test_evaluate_cli_writes_only_its_json_and_prints_a_table(run_copy, tmp_path):
    run_dir = run_copy("wgan_gp").rename(tmp_path / "runs" / "1_objective=wgan_gp,seed=0")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = _snapshot(run_dir)
    out = _cli("experiments.evaluate", f"run={run_dir}", "eval.draws=3", "eval.batch_size=24", cwd=cwd)
    assert out.returncode == 0 and out.stderr == "", out.stderr  # so an error is the only line on stderr
    path = run_dir / "evaluations" / "eval.batch_size=24,eval.draws=3.json"
    record = json.loads(path.read_text())
    assert record["overrides"] == ["eval.draws=3", "eval.batch_size=24"] and record["step"] == 6
    assert record["eval"]["batch_size"] == 24 and "w1_exact_ci95" in record["metrics"]
    lines = out.stdout.splitlines()
    assert lines[1].split() == ["key", "value", "ci95"] and lines[-1] == f"wrote {path}"
    assert lines[2].split()[:2] == ["w1_exact", f"{record['metrics']['w1_exact']:.6g}"]
    # No outputs/, .hydra/ or log file anywhere: only the evaluation.
    assert list(cwd.iterdir()) == []
    assert _snapshot(run_dir) == before | {"evaluations": None, str(path.relative_to(run_dir)): _hash(path)}


@pytest.mark.slow
def test_sample_cli_prints_the_png_path(run_copy, tmp_path):
    # Named like a sweep's job folder: "=" and "," in a path must not be read as override syntax.
    run_dir = run_copy("digits").rename(tmp_path / "runs" / "0_data=digits,seed=0")
    out = _cli("experiments.sample", f"run={run_dir}", "n=16", "seed=2", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    path = run_dir / "samples_step6_n16_seed2.png"
    assert out.stdout.strip().splitlines()[-1] == str(path) and _png_size(path) == (4 * 10 + 2, 4 * 10 + 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


CLI_ERRORS = [
    ("experiments.evaluate", "not_a_run", [], "is not a run folder (no .hydra/config.yaml)"),
    ("experiments.evaluate", "no_checkpoint", [], "has no checkpoints/last.pt"),
    ("experiments.evaluate", "run", ["model.critic.width=8", "objective=ctransform"], "cannot change "),
    ("experiments.evaluate", "run", ["eval.draws=0"], "eval.draws=0: must be a positive integer"),
    ("experiments.evaluate", "run", ["eval.drawz=2"], "eval.drawz is not an evaluation setting"),
    ("experiments.sample", "run", ["data=digits", "eval.draws=2"], "cannot change data, eval.draws: "),
]


@pytest.mark.slow
@pytest.mark.parametrize(("module", "folder", "args", "message"), CLI_ERRORS)
def test_cli_errors_are_one_line_exit_2_and_write_nothing(run_copy, tmp_path, module, folder, args, message):
    run_dir = run_copy("wgan_gp")
    target = run_dir
    if folder == "not_a_run":
        shutil.rmtree(run_dir / ".hydra")
    elif folder == "no_checkpoint":
        (run_dir / "checkpoints" / "last.pt").unlink()
    before = _snapshot(tmp_path)
    out = _cli(module, f"run={target}", *args, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert _snapshot(tmp_path) == before
    if "cannot change" in message and module == "experiments.evaluate":
        assert "model.critic.width, objective" in lines[0]
