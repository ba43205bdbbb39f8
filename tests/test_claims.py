"""experiments.claims: the verdict criteria on synthetic run folders, the page section, and a tiny run."""

import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from experiments import claims
from experiments.claims import (
    HOLDS,
    INCONCLUSIVE,
    REFUTED,
    SECTION,
    TIMING_PREFIX,
    Interval,
    claim1_verdict,
    claim2_comparisons,
    claim4_comparisons,
    combine,
    interval,
    load_sweep,
    paired,
    render,
)
from tests.conftest import ROOT

STEPS = 100


def fake_run(folder, *, objective="wgan_gp", seed=0, critic_steps=5, status="completed", **values):
    """A run folder as experiments.train writes it, with the given late-training and final values.

    ``values``: ``fid``, ``sharpness`` (final evaluation) and ``critic_rel_error``, ``grad_ot_cosine``
    (every evaluation in the second half of training; a different value before it, which must not count).
    """
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    config = {
        "seed": seed,
        "train": {"steps": STEPS, "batch_size": 64},
        "model": {"critic": {"width": 256, "depth": 2}},
        "objective": {"critic_steps": critic_steps},
    }
    choices = {"objective": objective, "data": "mnist5k", "model": "mlp"}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    hydra_yaml = {"hydra": {"runtime": {"choices": choices}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_yaml))
    (folder / ".hydra" / "overrides.yaml").write_text(f"- objective={objective}\n- seed={seed}\n")
    batch = {k: v for k, v in values.items() if k in ("critic_rel_error", "grad_ot_cosine")}
    final = {k: v for k, v in values.items() if k in ("fid", "sharpness")}
    rows = [
        {"step": 0, "w1_exact": 20.0} | {k: 99.0 for k in batch},  # first half: left out of the means
        {"step": STEPS // 2, "w1_exact": 10.0} | batch,
        {"step": STEPS, "w1_exact": 10.0} | batch | final,
    ]
    if status != "completed":
        rows = rows[:1]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"status": status, "steps_done": rows[-1]["step"], "elapsed_s": 1.0, "final": rows[-1]}
    (folder / "summary.json").write_text(json.dumps(summary))


def objectives_sweep(folder, spec, *, failed=()):
    """``spec``: {objective: [per-seed dicts of values]}; ``failed``: (objective, seed) pairs that failed."""
    job = 0
    for objective, per_seed in spec.items():
        for seed, values in enumerate(per_seed):
            status = "failed" if (objective, seed) in failed else "completed"
            fake_run(folder / f"{job}_objective={objective},seed={seed}", objective=objective, seed=seed,
                     status=status, **values)  # fmt: skip
            job += 1
    return load_sweep("objectives", "synthetic", folder)


def values(fid, sharpness, rel_error=None, cosine=None, noise=(0.0, 0.1, -0.1)):
    """Three seeds around the given values (``noise`` in relative units)."""
    out = []
    for e in noise:
        v = {"fid": fid * (1 + e), "sharpness": sharpness * (1 + e)}
        if rel_error is not None:
            v["critic_rel_error"] = rel_error * (1 + e)
        if cosine is not None:
            v["grad_ot_cosine"] = cosine * (1 + e)
        out.append(v)
    return out


GP = values(fid=10.0, sharpness=0.9, rel_error=0.8, cosine=0.1)


def verdicts(comparisons):
    return {c.candidate: c.verdict for c in comparisons}


# --- numbers over seeds -------------------------------------------------------------------------------


def test_interval_and_paired_difference():
    three = interval([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3)
    assert (three.mean, three.n) == (2.0, 3) and three.half == pytest.approx(2.4841, abs=1e-4)
    assert interval([5.0]).n == 1 and math.isnan(interval([5.0]).half) and interval([]).n == 0
    assert interval([1.0, math.nan, 3.0]).n == 2  # non-finite values are left out
    assert Interval(1.0, 0.5, 3).sign == 1 and Interval(-1.0, 0.5, 3).sign == -1
    assert Interval(1.0, 1.5, 3).sign == 0 and Interval(1.0, math.nan, 1).sign == 0
    d = paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 3.5, 3: 9.0})  # only seeds 0 and 1 pair up
    assert (d.mean, d.n) == (1.25, 2)


def test_combine():
    assert combine([HOLDS, INCONCLUSIVE]) == HOLDS
    assert combine([REFUTED, INCONCLUSIVE]) == REFUTED
    assert combine([HOLDS, REFUTED]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE]) == INCONCLUSIVE and combine([]) == INCONCLUSIVE


# --- claim 2 ------------------------------------------------------------------------------------------


def test_claim2_holds_when_better_approximations_give_worse_blurrier_samples(tmp_path):
    sweep = objectives_sweep(tmp_path, {
        "wgan_gp": GP,
        "ctransform": values(fid=40.0, sharpness=0.4, rel_error=0.1),  # estimates W1 better, worse samples
        "exact_ot": values(fid=45.0, sharpness=0.3),  # no critic: the premise holds by construction
    })  # fmt: skip
    comparisons = claim2_comparisons(sweep)
    assert verdicts(comparisons) == {"ctransform": HOLDS, "exact_ot": HOLDS}
    by = {c.candidate: c for c in comparisons}
    assert by["exact_ot"].premise is None and by["ctransform"].premise.sign == 1
    assert by["ctransform"].deltas["fid"].mean == pytest.approx(30.0)
    assert by["ctransform"].deltas["sharpness"].mean == pytest.approx(0.5)  # reference minus candidate
    assert combine(verdicts(comparisons).values()) == HOLDS


def test_claim2_refuted_when_better_approximations_give_better_sharper_samples(tmp_path):
    sweep = objectives_sweep(tmp_path, {"wgan_gp": GP, "exact_ot": values(fid=3.0, sharpness=1.0)})
    assert verdicts(claim2_comparisons(sweep)) == {"exact_ot": REFUTED}


def test_claim2_inconclusive_within_noise_when_measures_disagree_or_premise_fails(tmp_path):
    sweep = objectives_sweep(tmp_path, {
        "wgan_gp": GP,
        "exact_ot": values(fid=10.0, sharpness=0.9, noise=(0.3, -0.3, 0.05)),  # within the seeds' noise
        "sinkhorn": values(fid=40.0, sharpness=1.0),  # worse FID but sharper: the measures disagree
        "ctransform": values(fid=40.0, sharpness=0.4, rel_error=2.0),  # estimates W1 worse: no premise
    })  # fmt: skip
    comparisons = {c.candidate: c for c in claim2_comparisons(sweep)}
    assert {k: c.verdict for k, c in comparisons.items()} == dict.fromkeys(comparisons, INCONCLUSIVE)
    assert comparisons["ctransform"].note == "premise not met"
    assert combine(c.verdict for c in comparisons.values()) == INCONCLUSIVE


def test_claim2_by_critic_steps_compares_every_pair_fewer_steps_as_reference(tmp_path):
    settings = {1: values(10.0, 0.9, rel_error=0.9), 5: values(20.0, 0.7, rel_error=0.5),
                20: values(40.0, 0.4, rel_error=0.2)}  # fmt: skip
    for steps, per_seed in settings.items():
        for seed, v in enumerate(per_seed):
            fake_run(tmp_path / f"{steps}_{seed}", seed=seed, critic_steps=steps, **v)
    sweep = load_sweep("critic_steps", "synthetic", tmp_path)
    assert [g.name for g in sweep.groups] == ["1", "5", "20"]
    comparisons = claim2_comparisons(sweep)
    assert [(c.reference, c.candidate, c.verdict) for c in comparisons] == [
        ("1", "5", HOLDS), ("1", "20", HOLDS), ("5", "20", HOLDS),
    ]  # fmt: skip


def test_a_failed_job_leaves_its_seed_out_and_the_verdict_copes(tmp_path):
    spec = {"wgan_gp": GP, "exact_ot": values(fid=45.0, sharpness=0.3)}
    sweep = objectives_sweep(tmp_path / "one", spec, failed={("exact_ot", 2)})
    (comparison,) = claim2_comparisons(sweep)
    assert (comparison.seeds, comparison.verdict) == (2, HOLDS)
    assert sweep.group("exact_ot").status_cell() == "3 (1 failed)"
    # Two failed seeds of three: nothing left to pair, whatever the remaining values say.
    sweep = objectives_sweep(tmp_path / "two", spec, failed={("exact_ot", 0), ("wgan_gp", 1)})
    (comparison,) = claim2_comparisons(sweep)
    assert (comparison.verdict, comparison.note) == (INCONCLUSIVE, "fewer than 2 seeds")
    # Every job failed: the criteria still give an answer.
    sweep = objectives_sweep(tmp_path / "all", spec, failed={(o, s) for o in spec for s in range(3)})
    assert verdicts(claim2_comparisons(sweep)) == {"exact_ot": INCONCLUSIVE}
    assert claim1_verdict(sweep.group("wgan_gp"))[0] == INCONCLUSIVE


# --- claims 1 and 4 -----------------------------------------------------------------------------------


def test_claim1_verdict_against_a_quarter_of_the_exact_w1(tmp_path):
    cases = (("poor", 0.8, HOLDS), ("good", 0.05, REFUTED), ("edge", 0.25, INCONCLUSIVE))
    for name, error, expected in cases:
        sweep = objectives_sweep(tmp_path / name, {"wgan_gp": values(10.0, 0.9, rel_error=error)})
        verdict, error_interval = claim1_verdict(sweep.group("wgan_gp"))
        assert verdict == expected and error_interval.mean == pytest.approx(error)


def test_claim4_verdict_on_quality_against_the_alignment_of_the_field(tmp_path):
    sweep = objectives_sweep(tmp_path / "holds", {
        "wgan_gp": GP,  # better samples, field further from the OT directions (cosine 0.1)
        "ctransform": values(fid=40.0, sharpness=0.4, rel_error=0.1, cosine=0.6),
        "c_eps": values(fid=40.0, sharpness=0.4, rel_error=0.1, cosine=0.1, noise=(0.5, -0.5, 0.0)),
    })  # fmt: skip
    assert verdicts(claim4_comparisons(sweep)) == {"ctransform": HOLDS, "c_eps": INCONCLUSIVE}
    sweep = objectives_sweep(tmp_path / "refuted", {
        "wgan_gp": GP,  # worse samples, field further from the OT directions: quality follows alignment
        "ctransform": values(fid=5.0, sharpness=1.0, rel_error=0.1, cosine=0.6),
    })  # fmt: skip
    assert verdicts(claim4_comparisons(sweep)) == {"ctransform": REFUTED}


# --- claim 3 ------------------------------------------------------------------------------------------


def centroid_values(centroids_w1, real_w1):
    """Per-draw values as experiments.centroids stores them (W2 a little above W1)."""
    return {"centroids_w1": list(centroids_w1), "real_w1": list(real_w1),
            "centroids_w2": [v + 0.1 for v in centroids_w1], "real_w2": [v + 0.2 for v in real_w1],
            "kmeans_iter": [10] * len(real_w1)}  # fmt: skip


def test_claim3_verdict_on_the_paired_margin_over_draws():
    from scipy import stats

    centroids, real = [3.0, 3.2, 2.9, 3.1], [4.0, 4.1, 4.3, 3.9]
    row = claims.claim3_verdict(64, centroid_values(centroids, real))
    margin = [r - c for r, c in zip(real, centroids, strict=True)]
    half = stats.t.ppf(0.975, len(margin) - 1) * stats.tstd(margin) / math.sqrt(len(margin))
    assert row.verdict == HOLDS and (row.n, row.draws, row.closer_share) == (64, 4, 1.0)
    assert row.w1_margin.mean == pytest.approx(sum(margin) / 4) and row.w1_margin.half == pytest.approx(half)
    assert row.w2_margin.mean == pytest.approx(row.w1_margin.mean + 0.1)
    assert claims.claim3_verdict(64, centroid_values(real, centroids)).verdict == REFUTED  # real batch closer
    mixed = claims.claim3_verdict(
        64, centroid_values([3.0, 4.0, 3.5], [3.5, 3.5, 3.5])
    )  # margin within noise
    assert (mixed.verdict, mixed.closer_share) == (INCONCLUSIVE, pytest.approx(1 / 3))
    assert claims.claim3_verdict(64, centroid_values([3.0], [4.0])).verdict == INCONCLUSIVE  # one draw


def test_claim3_rows_in_order_of_batch_size():
    result = {"values": {"256": centroid_values([1.0, 1.1], [2.0, 2.2]),
                         "16": centroid_values([1.0, 3.0], [2.0, 1.0])}}  # fmt: skip
    rows = claims.claim3_rows(result)
    assert [r.n for r in rows] == [16, 256] and [r.verdict for r in rows] == [INCONCLUSIVE, HOLDS]
    assert claims.claim3_rows(None) == []


# --- the page -----------------------------------------------------------------------------------------


@pytest.fixture
def claims_cfg():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "claims.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    return cfg


def test_section_states_criteria_tables_failures_and_verdicts(tmp_path, claims_cfg):
    sweep = objectives_sweep(tmp_path, {
        "wgan_gp": GP, "ctransform": values(fid=40.0, sharpness=0.4, rel_error=0.1, cosine=0.6),
        "exact_ot": values(fid=45.0, sharpness=0.3),
    }, failed={("exact_ot", 1)})  # fmt: skip
    centroids = {"data": "mnist5k", "dim": 784, "num_train": 4000, "reference": "heldout", "draws": 3,
                 "seed": 0, "kmeans_capped": 0,
                 "values": {"16": centroid_values([3.0, 3.1, 3.2], [4.0, 4.2, 4.1])}}  # fmt: skip
    text = render(claims_cfg, "python -m experiments.claims", [sweep], {}, None, centroids)
    assert "mnist5k, MLP 2×256, batch 64, 100 generator steps" in text
    for fn in (claim1_verdict, claims.claim2_comparison, claims.claim3_verdict, claims.claim4_comparison):
        assert claims.criterion(fn) in text  # the criterion on the page is the code's docstring
    assert claims.criterion(combine) in text
    assert "`synthetic/7_objective=exact_ot,seed=1`: failed" in text
    assert text.count("**Verdict: holds**") == 4  # claims 1 to 4
    assert "`python -m experiments.centroids data=mnist5k` on mnist5k (d = 784" in text
    assert TIMING_PREFIX not in text
    # Without a k-means result claim 3 says so, and is not decided.
    text = render(claims_cfg, "python -m experiments.claims", [sweep], {}, None, None)
    assert "No experiments.centroids result" in text and text.count("**Verdict: holds**") == 3


# --- a tiny run of the command -----------------------------------------------------------------------

# A handful of steps per job on sklearn's 8x8 digits with small models, two seeds, one sweep restricted to
# WGAN-GP and the c-transform (claims 1, 2 and 4 all read it); the image-quality classifier trains once
# (a few seconds) into a folder shared by the runs below.
TINY_CLAIMS = [
    "data=digits", "train.steps=4", "train.batch_size=32", "train.log_every=2", "train.checkpoint_every=4",
    "eval.every=2", "eval.batch_size=32", "eval.large_n=64", "eval.probe_steps=2", "eval.plot=false",
    "model.generator.width=8", "model.critic.width=8",
    "hydra.sweeper.params.objective='wgan_gp,ctransform'",
]  # fmt: skip
SWEEP = "claim2_approximation_vs_quality_mnist"
TINY_CENTROIDS = '"data=digits","batch_sizes=[8,16]","draws=3"'  # claim 3 on 8x8 digits, a few draws


def run_claims(cwd, *extra):
    cwd.mkdir(parents=True, exist_ok=True)
    tiny = ",".join(f'"{o}"' for o in [*TINY_CLAIMS, f"eval.classifier_dir={cwd.parent / 'classifiers'}"])
    args = [sys.executable, "-m", "experiments.claims", "out=claims_out", "results=RESULTS.md",
            "images=images", f"budgets.small.objectives=[{SWEEP}]", "budgets.small.critic_steps=[]",
            f"budgets.small.centroids=[{TINY_CENTROIDS}]",
            "n_jobs=1", "seeds=[0,1]", "samples=4", f"overrides=[{tiny}]", *extra]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # this checkout, from any folder
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return (cwd / "RESULTS.md").read_text()


def without_timing(text):
    return [line for line in text.splitlines() if not line.startswith(TIMING_PREFIX)]


@pytest.mark.slow
def test_claims_command_twice_gives_the_same_section_and_a_rerun_reuses_the_jobs(tmp_path):
    first = run_claims(tmp_path / "a")
    second = run_claims(tmp_path / "b")  # fresh output folders: every job trained again
    assert without_timing(first) == without_timing(second)
    assert sum(line.startswith(TIMING_PREFIX) for line in first.splitlines()) == 1
    assert first.count(f"<!-- begin {SECTION}") == 1 and first.count("**Verdict: ") == 4
    assert "| 16 | 3 |" in first and "on digits (d = 64" in first  # claim 3's table, from its own run
    assert f"| `{SWEEP}` | digits, MLP 2×8, batch 32, 4 generator steps | 4 | 4 |" in first
    record = json.loads((tmp_path / "a" / "claims_out" / SWEEP / claims.SWEEP_RECORD).read_text())
    assert len(record["jobs"]) == 4 and record["returncode"] == 0
    for name in ("critic_vs_w1", "grad_ot_cosine", f"samples_{SWEEP}", f"quality_{SWEEP}", "centroids"):
        assert (tmp_path / "a" / "images" / f"claims_small_{name}.png").is_file()
        assert f"](images/claims_small_{name}.png)" in first
    # The same output folder again: nothing is trained, and the section is the same.
    again = run_claims(tmp_path / "a")
    assert without_timing(again) == without_timing(first)
    assert "reused" in next(line for line in again.splitlines() if line.startswith(TIMING_PREFIX))
