"""Multirun sweeps through the real entry point with Hydra's basic, joblib and submitit_local launchers."""

import json
import os
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf

from tests.conftest import CONF, TINY, check_run_folder, run_module

# One intra-op thread per process: on a shared 2-core machine, torch's default of two threads makes
# these tiny runs many times slower, and the launchers start several processes at once.
ENV = os.environ | {"OMP_NUM_THREADS": "1"}
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
TINY_NO_STEPS = [o for o in TINY if not o.startswith("train.steps=")]


def sweep(sweep_dir, *overrides, tiny=TINY):
    return run_module(
        "experiments.train", "--multirun", *tiny, *overrides, f"hydra.sweep.dir={sweep_dir}", env=ENV
    )


def job_folders(sweep_dir):
    """``{job number: folder}``; fails if two jobs share a number or anything else sits beside them."""
    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    nums = [int(p.name.split("_", 1)[0]) for p in folders]
    assert len(set(nums)) == len(nums), [p.name for p in folders]
    return dict(sorted(zip(nums, folders, strict=True)))


def assert_named_by_overrides(folder, num):
    """``<num>_<overrides>``: the whole list Hydra made (``/`` replaced, since it would nest folders) or,
    when that is too long for one file name, its beginning and a hash of the whole."""
    full = OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra.job.override_dirname.replace("/", "_")
    assert folder.name.startswith(f"{num}_") and len(folder.name.encode()) <= 255, folder.name
    shown = folder.name.removeprefix(f"{num}_")
    head, _, digest = shown.rpartition("_")
    assert shown == full or (full.startswith(head) and re.fullmatch("[0-9a-f]{6,}", digest)), (shown, full)


def check_jobs(sweep_dir, seeds):
    """Every job completed in its own folder, named ``<num>_<its overrides>``; returns metrics per seed."""
    jobs = job_folders(sweep_dir)
    assert sorted(jobs) == list(range(len(seeds)))
    metrics = {}
    for num, folder in jobs.items():
        overrides = list(OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        seed = next(int(o.split("=")[1]) for o in overrides if o.startswith("seed="))
        assert_named_by_overrides(folder, num)
        assert f"seed={seed}," in folder.name  # the swept override is in the part shown
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps_done"] == 6, summary
        # Its log holds its own run only (Hydra reconfigures logging for each job, reused workers too).
        log = (folder / "train.log").read_text()
        assert log.count("run folder: ") == 1 and str(folder) in log
        metrics[seed] = (folder / "metrics.jsonl").read_text()
    assert sorted(metrics) == sorted(seeds)
    check_run_folder(*jobs.values())
    return metrics


@pytest.fixture(scope="module")
def basic_metrics(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("basic") / "sweep"
    out = sweep(sweep_dir, "seed=0,1,2")
    assert out.returncode == 0, out.stderr
    return check_jobs(sweep_dir, [0, 1, 2])


@pytest.mark.slow
def test_basic_launcher_gives_each_job_its_own_named_folder(basic_metrics):
    assert len(set(basic_metrics.values())) == 3  # three seeds, three different runs


@pytest.mark.slow
def test_joblib_launcher_runs_every_job_and_matches_the_basic_one(tmp_path, basic_metrics):
    # Two workers for four jobs: workers are reused, so state left by one job would show in the next;
    # two jobs are rejected by validation and must not stop the other two.
    sweep_dir = tmp_path / "sweep"
    out = sweep(sweep_dir, "seed=0,1", "train.steps=0,6", *JOBLIB, tiny=TINY_NO_STEPS)
    assert out.returncode == 1  # every job runs, then the launcher exits 1 with the first error
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr
    assert "train.steps=0: must be a positive integer" in out.stderr
    jobs = job_folders(sweep_dir)
    assert len(jobs) == 4
    done, trained = {}, []
    for num, folder in jobs.items():
        assert_named_by_overrides(folder, num)
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        if overrides["train.steps"] == "0":
            assert not (folder / "metrics.jsonl").exists()  # rejected before anything was built
            continue
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps_done"] == 6, summary
        log = (folder / "train.log").read_text()
        assert log.count("run folder: ") == 1 and str(folder) in log
        done[int(overrides["seed"])] = (folder / "metrics.jsonl").read_text()
        trained.append(folder)
    # The same numbers as one process running the jobs one after the other.
    assert done == {s: basic_metrics[s] for s in (0, 1)}
    check_run_folder(*trained)


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path, basic_metrics):
    # Measured at about 9 s on 2 CPU cores with nothing else running: the same code path as SLURM jobs.
    out = sweep(tmp_path / "sweep", "seed=0,1", "hydra/launcher=submitit_local")
    assert out.returncode == 0, out.stderr
    metrics = check_jobs(tmp_path / "sweep", [0, 1])
    assert metrics == {s: basic_metrics[s] for s in (0, 1)}
    assert (tmp_path / "sweep" / ".submitit").is_dir()


@pytest.fixture(scope="module")
def sweep_with_bad_jobs(tmp_path_factory):
    """Four jobs: a valid one, one that diverges, and two rejected by validation (train.steps=0)."""
    sweep_dir = tmp_path_factory.mktemp("bad") / "sweep"
    out = sweep(
        sweep_dir, "train.steps=0,6", "objective.generator_optimizer.lr=1e30,1e-4", tiny=TINY_NO_STEPS
    )
    jobs = {}
    for num, folder in job_folders(sweep_dir).items():
        assert_named_by_overrides(folder, num)
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        bad_steps = int(overrides["train.steps"]) == 0
        jobs[(bad_steps, float(overrides["objective.generator_optimizer.lr"]) > 1)] = folder
    return out, jobs


@pytest.mark.slow
def test_bad_jobs_do_not_stop_the_others(sweep_with_bad_jobs):
    out, jobs = sweep_with_bad_jobs
    assert out.returncode == 1  # the launchers run every job, then exit 1 with the first error
    assert "train.steps=0: must be a positive integer" in out.stderr
    assert len(jobs) == 4
    good = json.loads((jobs[(False, False)] / "summary.json").read_text())
    assert good["status"] == "completed" and good["steps_done"] == 6
    diverged = json.loads((jobs[(False, True)] / "summary.json").read_text())
    assert diverged["status"] == "diverged" and diverged["error"].startswith("non-finite")
    for rejected in (jobs[(True, False)], jobs[(True, True)]):
        assert not (rejected / "metrics.jsonl").exists()  # rejected before anything was built


@pytest.mark.slow
def test_a_rejected_job_records_why_in_its_summary(sweep_with_bad_jobs):
    _, jobs = sweep_with_bad_jobs
    summary = json.loads((jobs[(True, False)] / "summary.json").read_text())
    assert summary["status"] == "failed" and "train.steps=0" in summary["error"]


def test_sweep_and_run_folders_differ_within_one_second():
    # Hydra creates folders with exist_ok=True: two sweeps whose folder names are equal would share it.
    setup_globals()  # registers Hydra's ${now:} resolver, as a real start does
    names = []
    for _ in range(2):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", return_hydra_config=True)
        names.append((cfg.hydra.sweep.dir, cfg.hydra.run.dir))
    GlobalHydra.instance().clear()
    assert names[0][0] != names[1][0] and names[0][1] != names[1][1], names
