"""``train.parallel_seeds=K``: K copies batched in one process give each seed the numbers of its own run."""

import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan import checkpoint, trainer
from gan.config import ConfigError
from gan.runfolder import tb_dir
from scripts import bench_parallel, summarize
from tests.conftest import TINY, check_run_folder, compose_train, run_module

# The copies' forward and backward passes are batched matrix products over stacked weights, which can
# round differently from the single run's unbatched ones (here: the critic's scalar output layer, the
# generator's first-layer weight gradient), and training compounds rounding differences step by step.
# Measured at this budget (20 steps, widths 16, batch 32, seeds 0 and 1): metrics differ from the
# separate runs' by at most 5e-7 relative (wgan_sn; 8e-9 wgan_gp, 1e-9 wgan_lp, 7e-9 ns_gan, 2e-9
# ctransform, 2e-10 exact_ot and sinkhorn, 6e-8 the MLP on digits; wgan_clip is bit-identical).
# rel 1e-5 leaves a wide margin and still fails on any wrong draw or gradient, which changes the
# numbers by far more from the first update on. c_eps is the exception: its soft-min over a tiny ReLU
# critic lets one rounding difference flip an activation, and seed 0 jumps from 1e-7 (step 10) to 1e-5
# relative in critic_estimate and 2e-5 absolute in grad_ot_cosine (step 20); it gets rel 1e-3, abs 1e-4.
REL = 1e-5
TOLERANCE = {"objective=c_eps": {"rel": 1e-3, "abs": 1e-4}}
SHORT = [*TINY, "train.steps=20", "eval.every=10", "eval.plot=false"]
SEEDS = (5, 6, 7)


def _compose(*overrides):
    return compose_train(*overrides, tiny=SHORT)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def _assert_same_numbers(rows, expected, *, rel=REL, abs=1e-12):
    assert [r["step"] for r in rows] == [r["step"] for r in expected]
    for row, want in zip(rows, expected, strict=True):
        assert row.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, int):
                assert row[key] == value, (row["step"], key)
            else:
                assert row[key] == pytest.approx(value, rel=rel, abs=abs), (row["step"], key)


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
    """Single runs of wgan_gp with seeds 5, 6, 7, one folder each."""
    root = tmp_path_factory.mktemp("separate")
    for seed in SEEDS:
        trainer.train(_compose(f"seed={seed}"), root / str(seed))
    return root


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    """The same three seeds as one job with train.parallel_seeds=3."""
    run_dir = tmp_path_factory.mktemp("batched") / "run"
    summary = trainer.train(_compose("seed=5", "train.parallel_seeds=3"), run_dir)
    return run_dir, summary


def test_each_copy_gives_the_numbers_of_its_own_run(separate, batched):
    run_dir, summary = batched
    for seed in SEEDS:
        copy_dir, single = run_dir / f"seed_{seed}", separate / str(seed)
        _assert_same_numbers(_rows(copy_dir), _rows(single))
        assert _summary(copy_dir)["final"] == _rows(copy_dir)[-1]

        # The losses logged to TensorBoard are this copy's, step for step.
        logged = {}
        for folder in (copy_dir, single):
            acc = EventAccumulator(str(tb_dir(folder)), size_guidance={"scalars": 0})
            acc.Reload()
            logged[folder] = {
                tag: acc.Scalars(tag) for tag in ("loss/critic", "loss/penalty", "loss/generator")
            }
        for tag, events in logged[single].items():
            assert [e.step for e in logged[copy_dir][tag]] == [e.step for e in events]
            assert [e.value for e in logged[copy_dir][tag]] == pytest.approx(
                [e.value for e in events], rel=1e-4
            )

        # The checkpoint holds what the single run's holds: weights, optimiser states, random generator.
        mine = torch.load(copy_dir / "checkpoints" / "last.pt", weights_only=True)
        theirs = torch.load(single / "checkpoints" / "last.pt", weights_only=True)
        assert torch.equal(mine["train_rng"], theirs["train_rng"])
        for key in ("generator", "critic", "opt_g", "opt_c"):
            torch.testing.assert_close(mine[key], theirs[key], rtol=1e-4, atol=1e-7)
        assert mine["config"] == theirs["config"]  # the config of the equivalent single run


def test_the_run_folder_holds_one_checked_run_per_copy(batched):
    run_dir, summary = batched
    copies = [run_dir / f"seed_{seed}" for seed in SEEDS]
    check_run_folder(*copies)
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [".lock", "seed_5", "seed_6", "seed_7", "summary.json"]
    assert summary == _summary(run_dir)
    assert summary["status"] == "completed" and summary["steps_done"] == 20
    assert summary["runs"] == {"seed_5": "completed", "seed_6": "completed", "seed_7": "completed"}
    finals = [_summary(c)["final"] for c in copies]
    assert summary["final"]["w1_exact"] == pytest.approx(sum(f["w1_exact"] for f in finals) / 3)
    assert summary["elapsed_s"] == pytest.approx(sum(_summary(c)["elapsed_s"] for c in copies), abs=5e-3)
    for copy_dir, seed in zip(copies, SEEDS, strict=True):
        assert (copy_dir / ".hydra" / "overrides.yaml").read_text() == f"- seed={seed}\n"
        assert f"seed: {seed}\n" in (copy_dir / ".hydra" / "config.yaml").read_text()


def test_a_copy_does_not_depend_on_the_other_copies(batched, tmp_path):
    # Seed 6 as the second of three copies and as the first of two: bit for bit the same.
    trainer.train(_compose("seed=6", "train.parallel_seeds=2"), tmp_path)
    assert _rows(tmp_path / "seed_6") == _rows(batched[0] / "seed_6")
    assert _summary(tmp_path / "seed_6")["final"] == _summary(batched[0] / "seed_6")["final"]


OBJECTIVES = ["wgan_lp", "wgan_clip", "wgan_sn", "ns_gan", "ctransform", "c_eps", "exact_ot", "sinkhorn"]
IMAGE_MLP = ["data=digits", "model.latent_dim=8"]


@pytest.mark.parametrize(
    "overrides",
    [[f"objective={name}"] for name in OBJECTIVES] + [IMAGE_MLP, [*IMAGE_MLP, "objective=ctransform"]],
    ids=" ".join,
)
def test_every_objective_gives_the_numbers_of_separate_runs(tmp_path, overrides):
    trainer.train(_compose(*overrides, "train.parallel_seeds=2"), tmp_path / "batched")
    for seed in (0, 1):
        trainer.train(_compose(*overrides, f"seed={seed}"), tmp_path / str(seed))
        _assert_same_numbers(
            _rows(tmp_path / "batched" / f"seed_{seed}"),
            _rows(tmp_path / str(seed)),
            **TOLERANCE.get(" ".join(overrides), {}),
        )


def test_a_diverging_copy_stops_alone(separate, tmp_path, monkeypatch):
    build = trainer.build

    def build_with_nan(cfg, device, data=None):
        built = build(cfg, device, data)
        if cfg.seed == 6:  # its critic: the step-0 evaluation finds a NaN estimate
            with torch.no_grad():
                next(built[2].parameters()).fill_(math.nan)
        return built

    monkeypatch.setattr(trainer, "build", build_with_nan)
    summary = trainer.train(_compose("seed=5", "train.parallel_seeds=3"), tmp_path)

    assert summary["status"] == "diverged"
    assert summary["runs"] == {"seed_5": "completed", "seed_6": "diverged", "seed_7": "completed"}
    bad = _summary(tmp_path / "seed_6")
    assert bad["status"] == "diverged" and bad["steps_done"] == 0 and "non-finite metric" in bad["error"]
    for seed in (5, 7):  # its NaNs never reach the others' slices of the stacked tensors
        _assert_same_numbers(_rows(tmp_path / f"seed_{seed}"), _rows(separate / str(seed)))


def test_copies_diverging_in_training_are_recorded_as_a_single_run_records_them(tmp_path):
    absurd = [
        "objective.generator_optimizer.lr=1e30",
        "objective.critic_optimizer.lr=1e30",
        "train.log_every=1",
        "eval.probe_every=0",
    ]
    summary = trainer.train(_compose(*absurd, "train.parallel_seeds=2"), tmp_path / "batched")
    assert summary["status"] == "diverged"
    for seed in (0, 1):
        single = trainer.train(_compose(*absurd, f"seed={seed}"), tmp_path / str(seed))
        copy_summary = _summary(tmp_path / "batched" / f"seed_{seed}")
        assert copy_summary["status"] == single["status"] == "diverged"
        assert copy_summary["diverged_at_step"] == single["diverged_at_step"]
        assert copy_summary["final"] == pytest.approx(single["final"], rel=REL)


class StopAtStep7(checkpoint.StopRequests):
    """A stop request (as from SIGTERM) that the loop finds when it reaches step 7."""

    def __init__(self):
        super().__init__()
        self.polls = 0

    @property
    def requested(self):
        self.polls += 1
        return self.polls > 7


def test_an_interrupted_job_resumes_every_copy_exactly(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "StopRequests", StopAtStep7)
        summary = trainer.train(_compose("seed=5", "train.parallel_seeds=2"), tmp_path / "a")
    assert summary["status"] == "interrupted" and summary["runs"] == {
        "seed_5": "interrupted",
        "seed_6": "interrupted",
    }
    assert torch.load(tmp_path / "a" / "seed_6" / "checkpoints" / "last.pt", weights_only=True)["step"] == 7

    assert (
        trainer.train(_compose("seed=5", "train.parallel_seeds=2", "resume=true"), tmp_path / "a")["status"]
        == "completed"
    )
    trainer.train(_compose("seed=5", "train.parallel_seeds=2"), tmp_path / "b")
    for seed in (5, 6):
        a, b = tmp_path / "a" / f"seed_{seed}", tmp_path / "b" / f"seed_{seed}"
        assert _rows(a) == _rows(b)
        assert _summary(a)["final"] == _summary(b)["final"]
    with pytest.raises(ConfigError, match="already holds a run"):
        trainer.train(_compose("seed=5", "train.parallel_seeds=2"), tmp_path / "a")
    with pytest.raises(ConfigError, match="checkpoints are at different steps"):  # a copy more, from step 0
        trainer.train(_compose("seed=5", "train.parallel_seeds=3", "resume=true"), tmp_path / "a")

    # Each copy's folder is a single run's: the single-run trainer resumes it as it is.
    assert (
        trainer.train(_compose("seed=6", "resume=true"), tmp_path / "b" / "seed_6")["status"] == "completed"
    )


def test_models_that_cannot_be_stacked_fail_in_one_line_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError) as info:
        trainer.train(_compose("data=digits", "model=dcgan", "train.parallel_seeds=4"), tmp_path / "run")
    assert str(info.value) == "train.parallel_seeds=4 batches the MLP models only (model=mlp)"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_entry_point_runs_the_copies(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["data=swissroll", "seed=3", "train.parallel_seeds=2", f"hydra.run.dir={run_dir}"]
    out = run_module("experiments.train", *TINY, *overrides)
    assert out.returncode == 0, out.stderr
    check_run_folder(run_dir / "seed_3", run_dir / "seed_4")
    overrides = (run_dir / "seed_4" / ".hydra" / "overrides.yaml").read_text().splitlines()
    assert "- seed=4" in overrides and "- data=swissroll" in overrides
    assert not any("parallel_seeds" in line for line in overrides)
    assert _summary(run_dir)["runs"] == {"seed_3": "completed", "seed_4": "completed"}


def test_summarize_reads_each_copy_as_a_run_with_its_seed(batched):
    runs, _ = summarize.collect(batched[0])
    assert sorted((run.rel, run.seed, run.status) for run in runs) == [
        (f"seed_{seed}", str(seed), "completed") for seed in SEEDS
    ]


def test_bench_quick_prints_the_table(capsys):
    assert bench_parallel.main(["--quick"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2
    assert all(float(row.split("|")[-2]) < REL for row in rows)  # the batched copies did the same work
