"""The known-truth critic benchmark: the truths themselves, the metrics against them, and the entry point."""

import json
import math
import os
import re

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from experiments.critic_bench import check_choices
from gan.config import ConfigError
from gan.critic_bench import evaluate, run
from gan.objectives import WGANGP
from gan.problems import Funnels, KnownPotential, Translation
from gan.runfolder import tb_dir
from metrics import known
from metrics.critic import CRITIC_ESTIMATE, LIPSCHITZ_MAX, critic_vs_w1, input_gradients
from metrics.ot import wasserstein
from tests.conftest import CONF, check_run_folder, run_module

ENV = os.environ | {"OMP_NUM_THREADS": "1"}
TINY = [
    "train.steps=4",
    "train.batch_size=32",
    "train.log_every=2",
    "train.checkpoint_every=2",
    "train.progress=false",
    "eval.every=2",
    "eval.batch_size=32",
    "eval.box_points=32",
    "model.critic.width=16",
    "eval.plot=false",
]
FUNNELS_TINY = ["problem=funnels", "problem.mc_samples=4000"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def layout(dim, n_funnels=5, offset=0.5, seed=0):
    return known.funnel_layout(dim=dim, n_funnels=n_funnels, box=1.0, offset=offset, generator=gen(seed))


@pytest.fixture
def bench_cfg():
    """``bench_cfg(*overrides)``: the composed critic_bench config at the tiny test budget."""

    def _compose(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="critic_bench", overrides=[*TINY, *overrides])

    yield _compose
    GlobalHydra.instance().clear()


# ---------------------------------------------------------------------------------------------------
# The truths


@pytest.mark.parametrize("dim", [2, 16, 128])
def test_funnel_potential_has_unit_gradient_and_is_1_lipschitz(dim):
    centres, offsets = layout(dim)
    x = known.uniform_box(2000, dim=dim, box=1.5, generator=gen(1), dtype=torch.float64)
    grad = input_gradients(lambda z: known.funnel_potential(z, centres, offsets), x)
    np.testing.assert_allclose(grad.norm(dim=1).numpy(), 1.0, atol=1e-12)
    torch.testing.assert_close(grad, known.funnel_potential_grad(x, centres, offsets), rtol=0, atol=1e-12)
    y = known.uniform_box(2000, dim=dim, box=1.5, generator=gen(2), dtype=torch.float64)
    rise = (known.funnel_potential(x, centres, offsets) - known.funnel_potential(y, centres, offsets)).abs()
    assert torch.all(rise <= (x - y).norm(dim=1) + 1e-12)


@pytest.mark.parametrize("dim, n_funnels, offset", [(2, 4, 0.5), (2, 12, 2.0), (16, 8, 1.0), (128, 4, 0.5)])
def test_moving_towards_the_active_centre_keeps_the_funnel_and_lowers_u_by_the_distance(
    dim, n_funnels, offset
):
    centres, offsets = layout(dim, n_funnels, offset)
    p, q, t = known.sample_funnels(
        4000,
        centres=centres,
        offsets=offsets,
        move_min=0.0,
        move_max=0.99,
        generator=gen(3),
        dtype=torch.float64,
    )
    k_q = known.funnel_index(q, centres, offsets)
    assert torch.equal(known.funnel_index(p, centres, offsets), k_q)
    assert len(k_q.unique()) > 1  # several funnels are in play, so the check can fail
    u = known.funnel_potential
    torch.testing.assert_close(u(q, centres, offsets) - u(p, centres, offsets), t, rtol=0, atol=1e-12)
    torch.testing.assert_close((q - p).norm(dim=1), t, rtol=0, atol=1e-12)
    # The true gradient at p is the one at its partner q: both lie on one ray from the same centre.
    torch.testing.assert_close(
        known.funnel_potential_grad(p, centres, offsets), known.funnel_potential_grad(q, centres, offsets)
    )


@pytest.mark.parametrize("dim", [2, 16, 64])
@pytest.mark.parametrize("solver", ["emd", "assignment"])
def test_paired_batches_have_exact_w1_equal_to_the_mean_pair_distance(dim, solver):
    # The pairs come from an optimal coupling, so on a finite set of them the identity matching is an
    # optimal assignment: the exact minibatch W1 is the mean pair distance, whatever n.
    centres, offsets = layout(dim)
    m = known.translation_vector(dim, 0.7, dtype=torch.float64)
    for n in (5, 16, 48):
        p, q, t = known.sample_funnels(
            n, centres=centres, offsets=offsets, generator=gen(n), dtype=torch.float64
        )
        assert wasserstein(p, q, solver=solver) == pytest.approx(float(t.mean()), rel=1e-9)
        p, q = known.sample_translation(n, m=m, generator=gen(n))
        assert wasserstein(p, q, solver=solver) == pytest.approx(0.7, rel=1e-9)


def test_funnels_w1_matches_sorted_samples_in_one_dimension():
    # On a line W1 is the mean gap between sorted samples: an independent check of the Monte Carlo value.
    centres, offsets = layout(1, n_funnels=3)
    truth = known.funnels_w1(centres=centres, offsets=offsets, n=400_000, generator=gen(7))
    p, _, _ = known.sample_funnels(
        200_000, centres=centres, offsets=offsets, generator=gen(8), dtype=torch.float64
    )
    _, q, _ = known.sample_funnels(
        200_000, centres=centres, offsets=offsets, generator=gen(9), dtype=torch.float64
    )
    sorted_w1 = float((p.flatten().sort().values - q.flatten().sort().values).abs().mean())
    # Two independent samples of 2e5 points are ~1e-3 apart in W1 here; allow 5e-3.
    assert sorted_w1 == pytest.approx(truth[known.W1_TRUE], abs=5e-3)
    assert 0 < truth[known.W1_TRUE_CI95] < 1e-3


def test_monte_carlo_interval_shrinks_and_covers_a_larger_estimate():
    centres, offsets = layout(16)
    small = known.funnels_w1(centres=centres, offsets=offsets, n=20_000, generator=gen(1))
    large = known.funnels_w1(centres=centres, offsets=offsets, n=320_000, generator=gen(2), chunk=50_000)
    assert large[known.W1_TRUE_CI95] == pytest.approx(small[known.W1_TRUE_CI95] / 4, rel=0.1)
    assert (
        abs(small[known.W1_TRUE] - large[known.W1_TRUE])
        < small[known.W1_TRUE_CI95] + large[known.W1_TRUE_CI95]
    )


# ---------------------------------------------------------------------------------------------------
# A critic against the truth


@pytest.mark.parametrize("dim", [2, 128])
def test_the_true_translation_potential_gets_w1_and_cosine_one(dim):
    m = known.translation_vector(dim, 1.3, dtype=torch.float64)
    p, q = known.sample_translation(64, m=m, box=2.0, generator=gen(dim))

    def critic(x):
        return known.translation_potential(x, m)

    estimate = critic_vs_w1(critic(q), critic(p), wasserstein(q, p))[CRITIC_ESTIMATE]
    assert estimate == pytest.approx(known.translation_w1(m)[known.W1_TRUE], rel=1e-12)
    grad = input_gradients(critic, p)
    truth = known.translation_potential_grad(p, m)
    assert known.grad_true_cosine(grad, truth)[known.GRAD_TRUE_COSINE] == pytest.approx(1.0, abs=1e-12)
    assert known.grad_error(grad, truth)[known.GRAD_ERROR] == pytest.approx(0.0, abs=1e-12)
    assert known.lipschitz_max_at(critic, [p, q])[LIPSCHITZ_MAX] == pytest.approx(1.0, abs=1e-12)


def test_gradient_scores_of_wrong_gradients():
    truth = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cases = {  # gradient -> (cosine, normalised squared error)
        "opposite": (-truth, -1.0, 4.0),
        "orthogonal": (truth.flip(1), 0.0, 2.0),
        "zero": (torch.zeros_like(truth), 0.0, 1.0),
        "half length": (0.5 * truth, 1.0, 0.25),
    }
    for name, (grad, cos, err) in cases.items():
        assert known.grad_true_cosine(grad, truth)[known.GRAD_TRUE_COSINE] == pytest.approx(cos), name
        assert known.grad_error(grad, truth)[known.GRAD_ERROR] == pytest.approx(err), name
    truth_error = known.estimate_vs_truth(0.8, 1.0)
    assert truth_error[known.TRUE_GAP] == pytest.approx(-0.2)
    assert truth_error[known.TRUE_REL_ERROR] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same shape"):
        known.grad_true_cosine(truth, truth[:1])


@pytest.mark.parametrize(
    "problem",
    [Translation(dim=3, shift=0.8), Funnels(dim=8, mc_samples=20_000)],
    ids=["translation", "funnels"],
)
def test_evaluation_of_the_true_potential(problem):
    objective = WGANGP(1, None, None, penalty_weight=10.0)
    eval_cfg = type("EvalCfg", (), {"batch_size": 256, "solver": "auto", "box_points": 256})()
    row = evaluate(KnownPotential(problem), problem, objective, eval_cfg, problem.truth(), rng=gen(4))
    assert row[known.GRAD_TRUE_COSINE] == pytest.approx(1.0, abs=1e-5)
    assert row[known.GRAD_ERROR] == pytest.approx(0.0, abs=1e-5)
    assert row[LIPSCHITZ_MAX] == pytest.approx(1.0, abs=1e-4)
    assert row[known.LIPSCHITZ_MAX_BOX] <= row[LIPSCHITZ_MAX]
    # On independent batches the estimate of the true potential is unbiased; its sd is below 0.06 here.
    assert row[known.TRUE_GAP] == pytest.approx(0.0, abs=0.2)
    assert row["ctransform_bound"] <= row["w1_exact"] + 1e-9
    # The exact minibatch W1 of independent batches lies above the truth (the minibatch bias).
    assert row["w1_exact"] > row[known.W1_TRUE]


# ---------------------------------------------------------------------------------------------------
# Runs


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "overrides",
    [
        ["objective=wgan_clip", "problem=translation", "problem.dim=16"],
        ["objective=c_eps", "problem=translation", "problem.dim=2"],
        ["objective=wgan_lp", *FUNNELS_TINY, "problem.dim=2", "eval.plot=true"],
        ["objective=wgan_sn", *FUNNELS_TINY, "problem.dim=128"],
    ],
    ids=lambda o: "-".join(o),
)
def test_a_tiny_run_writes_every_key_and_a_checkpoint(bench_cfg, tmp_path, overrides):
    summary = run(bench_cfg(*overrides), tmp_path)
    assert summary["status"] == "completed" and summary["steps_done"] == 4
    rows = read_rows(tmp_path)
    assert [r["step"] for r in rows] == [0, 2, 4]
    for key in (known.W1_TRUE, known.W1_TRUE_CI95, known.TRUE_GAP, known.GRAD_TRUE_COSINE, known.GRAD_ERROR):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert {"w1_exact", "w1_real_real", CRITIC_ESTIMATE, LIPSCHITZ_MAX, "grad_ot_cosine"} <= set(rows[-1])
    assert summary["final"] == rows[-1]
    assert len({r[known.W1_TRUE] for r in rows}) == 1  # a property of the problem, not of the batches
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert (
        state["step"] == 4
        and state["config"]["objective"]["_target_"] == bench_cfg(*overrides).objective._target_
    )
    assert list(tb_dir(tmp_path).glob("events.out.tfevents*"))


def test_same_seed_same_numbers_and_resume_continues_exactly(bench_cfg, tmp_path):
    overrides = ["objective=wgan_gp", "problem=translation", "train.steps=6"]
    full = run(bench_cfg(*overrides), tmp_path / "full")
    again = run(bench_cfg(*overrides), tmp_path / "again")
    assert again["final"] == full["final"]
    part = run(bench_cfg("objective=wgan_gp", "problem=translation", "train.steps=2"), tmp_path / "part")
    assert part["steps_done"] == 2
    resumed = run(bench_cfg(*overrides, "resume=true"), tmp_path / "part")
    assert resumed["final"] == full["final"]
    assert read_rows(tmp_path / "part") == read_rows(tmp_path / "full")
    with pytest.raises(ConfigError, match="already holds a run"):
        run(bench_cfg(*overrides), tmp_path / "full")


def cli(*args, timeout=300):
    return run_module("experiments.critic_bench", *args, env=ENV, timeout=timeout)


@pytest.mark.slow
def test_multirun_over_objectives_and_dimensions_writes_checked_run_folders(tmp_path):
    out = cli(
        "--multirun", *TINY, *FUNNELS_TINY, "objective=wgan_gp,ctransform", "problem.dim=2,3", "seed=0",
        f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name.split("_", 1)[0] for p in folders] == ["0", "1", "2", "3"]
    assert "objective=ctransform,problem.dim=3" in folders[-1].name
    check_run_folder(*folders)
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["final"]["step"] == 4
        assert {"steps_done", "elapsed_s"} <= set(summary)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        # refused before Hydra starts
        (["problem=gaussian"], "problem=gaussian is not an option; choose one of: funnels, translation"),
        # refused by the problem's own checks, before the run writes anything
        (["problem.dim=0"], "problem.dim=0: must be a positive integer"),
    ],
)
def test_bad_options_fail_in_one_line_before_anything_is_written(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    out = cli(*TINY, *overrides, f"hydra.run.dir={run_dir}")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), out.stderr
    for name in ("metrics.jsonl", "summary.json", "checkpoints", "tb"):
        assert not (run_dir / name).exists(), name


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["objective=exact_ot"],
            "objective=exact_ot is not an option here; choose one of: c_eps, ctransform, wgan_clip, wgan_gp, "
            "wgan_lp, wgan_sn",
        ),
        (["objective=wgan_gp,ns_gan"], "objective=ns_gan is not an option here"),
        (["problem=translation,gauss"], "problem=gauss is not an option; choose one of: funnels"),
    ],
)
def test_bad_choices_are_refused_before_hydra_starts(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_choices(overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["objective=ns_gan"], "objective=ns_gan trains no W1 critic; choose one of: c_eps, ctransform"),
        (
            ["problem=funnels", "problem.move_max=1.0"],
            "problem.move_max=1.0: must be a number with 0 < x < 1",
        ),
        (["problem=funnels", "problem.move_min=0.8"], "problem.move_min=0.8, problem.move_max=0.75: need"),
        (["problem=translation", "problem.shift=-1"], "problem.shift=-1: must be a positive number"),
        (["eval.box_points=0"], "eval.box_points=0: must be a positive integer"),
    ],
)
def test_bad_values_are_refused_before_the_run_writes_anything(bench_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(bench_cfg(*overrides), tmp_path)
    assert not any(tmp_path.iterdir())
