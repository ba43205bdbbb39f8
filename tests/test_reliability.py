"""Resume after a kill with the same numbers, interrupts, divergence, and unusable checkpoints or folders."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gan import checkpoint
from gan.config import ConfigError
from gan.trainer import train
from tests.conftest import ROOT, TINY, check_run_folder, run_module

# Long enough to be killed partway, small enough to finish in seconds.
KILLABLE = [
    *TINY,
    "train.steps=300",
    "train.checkpoint_every=20",
    "eval.every=10",
    "eval.plot=false",
]


def _popen(run_dir, *overrides):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *KILLABLE, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the run finished before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def _lines(run_dir):
    return (run_dir / "metrics.jsonl").read_text().splitlines()


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = _popen(run_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return run_dir


def _checkpoint_step(run_dir):
    path = run_dir / "checkpoints" / "last.pt"
    try:
        return torch.load(path, weights_only=True)["step"] if path.exists() else 0
    except Exception:  # being replaced right now
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_checkpoint_step", [20, 100])
def test_sigkill_then_resume_gives_the_same_numbers(tmp_path, uninterrupted, kill_after_checkpoint_step):
    run_dir = tmp_path / "run"
    proc = _popen(run_dir)
    # Kill after a checkpoint, with evaluation lines past it that the resumed run must not duplicate.
    _wait_for(
        lambda: (
            _checkpoint_step(run_dir) >= kill_after_checkpoint_step
            and len(_lines(run_dir)) > kill_after_checkpoint_step // 10 + 2
        ),
        proc,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists()

    resumed = _popen(run_dir, "resume=true")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert _lines(run_dir) == _lines(uninterrupted)
    assert _summary(run_dir)["final"] == _summary(uninterrupted)["final"]
    assert _summary(run_dir)["status"] == "completed"
    check_run_folder(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_saves_a_checkpoint_and_resumes_exactly(tmp_path, uninterrupted, sig, code):
    run_dir = tmp_path / "run"
    proc = _popen(run_dir)
    _wait_for(lambda: (run_dir / "metrics.jsonl").exists() and len(_lines(run_dir)) >= 3, proc)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode == code
    summary = _summary(run_dir)
    assert summary["status"] == "interrupted"
    assert _checkpoint_step(run_dir) == summary["steps_done"]
    check_run_folder(run_dir)

    resumed = _popen(run_dir, "resume=true")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert _lines(run_dir) == _lines(uninterrupted)


def _submitit_task_pid(sweep_dir):
    """The pid of the job process that submitit's local controller started for this sweep."""
    for proc_dir in Path("/proc").iterdir():
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"submitit.core._submit" in cmdline and any(str(sweep_dir).encode() in a for a in cmdline):
            return int(proc_dir.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job process through /proc")
def test_preempted_submitit_job_is_requeued_and_resumes_exactly(tmp_path, uninterrupted):
    # What SLURM does on pre-emption, through the same launcher code: submitit's signal (USR2) reaches
    # the job process, the run saves a checkpoint, submitit requeues the job (locally: restarts it),
    # and the requeued job, started again with resume=true in its own folder, continues.
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "experiments.train", "--multirun", *KILLABLE, "resume=true",
            "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dirs = lambda: [p for p in sweep_dir.glob("0_*") if (p / "metrics.jsonl").exists()]  # noqa: E731
    _wait_for(lambda: run_dirs() and len(_lines(run_dirs()[0])) >= 3, proc)
    pid = _submitit_task_pid(sweep_dir)
    assert pid is not None, "no submitit job process found"
    os.kill(pid, signal.SIGUSR2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    (run_dir,) = run_dirs()
    logs = "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").rglob("*_log.*")))
    assert "Requeued job" in logs, logs[-2000:]
    assert "resuming at step" in logs, logs[-2000:]
    assert _lines(run_dir) == _lines(uninterrupted)
    assert _summary(run_dir)["status"] == "completed"
    assert _summary(run_dir)["final"] == _summary(uninterrupted)["final"]
    check_run_folder(run_dir)


def test_resuming_with_more_steps_equals_one_longer_run(compose_cfg, tmp_path):
    train(compose_cfg("train.steps=4"), tmp_path / "a")
    train(compose_cfg("train.steps=6", "resume=true"), tmp_path / "a")
    train(compose_cfg("train.steps=6"), tmp_path / "b")
    assert _lines(tmp_path / "a") == _lines(tmp_path / "b")
    assert _summary(tmp_path / "a")["final"] == _summary(tmp_path / "b")["final"]


def test_resuming_a_completed_run_changes_nothing(compose_cfg, tmp_path):
    train(compose_cfg(), tmp_path)
    before = _lines(tmp_path)
    assert train(compose_cfg("resume=true"), tmp_path)["status"] == "completed"
    assert _lines(tmp_path) == before


def test_divergence_is_recorded_with_the_last_good_metrics(compose_cfg, tmp_path):
    absurd = [
        "objective.generator_optimizer.lr=1e30",
        "objective.critic_optimizer.lr=1e30",
        "train.log_every=1",
        "eval.probe_every=0",  # the probe would inherit the absurd rate and fail the evaluation at step 0
    ]
    summary = train(compose_cfg(*absurd), tmp_path)
    assert summary["status"] == "diverged"
    assert summary["diverged_at_step"] == summary["steps_done"] >= 1
    assert summary["final"]["step"] == 0 and summary["final"]["w1_exact"] > 0  # the last finite evaluation
    assert "non-finite" in summary["error"]
    with pytest.raises(RuntimeError, match="non-finite"):
        train(compose_cfg(*absurd, "train.on_nan=raise"), tmp_path / "raise")
    assert _summary(tmp_path / "raise")["status"] == "diverged"


@pytest.mark.slow
def test_a_diverging_job_does_not_stop_the_sweep(tmp_path):
    lrs = "objective.critic_optimizer.lr=1e-4,1e30"
    sweep = f"hydra.sweep.dir={tmp_path}"
    out = run_module("experiments.train", "--multirun", *TINY, "train.log_every=1", lrs, sweep)
    assert out.returncode == 0, out.stderr  # diverging is an outcome, not a crash
    runs = [p for p in tmp_path.iterdir() if (p / "summary.json").exists()]
    jobs = sorted((p.name, _summary(p)["status"]) for p in runs)
    assert [status for _, status in jobs] == ["completed", "diverged"]
    assert jobs[0][0].startswith("0_") and jobs[1][0].startswith("1_")
    assert all("objective.critic_optimizer.lr=" in name for name, _ in jobs)  # names show the overrides


def test_a_folder_holding_a_run_is_never_mixed_with_another(compose_cfg, tmp_path):
    train(compose_cfg(), tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(compose_cfg(), tmp_path)


def test_resume_refuses_a_different_config_and_names_the_keys(compose_cfg, tmp_path):
    train(compose_cfg(), tmp_path)
    with pytest.raises(ConfigError, match=r"differs from the stored run in: model.critic.width, seed$"):
        train(compose_cfg("resume=true", "model.critic.width=8", "seed=5"), tmp_path)


def test_a_run_stored_before_a_key_existed_resumes_with_its_old_behaviour(compose_cfg):
    stored = OmegaConf.to_container(compose_cfg(), resolve=True)
    del stored["eval"]["draws"], stored["eval"]["inception_weights"], stored["train"]["parallel_seeds"]
    assert checkpoint.config_differences(stored, compose_cfg()) == []
    assert checkpoint.config_differences(stored, compose_cfg("eval.draws=2")) == ["eval.draws"]


def _run_cli(*overrides):
    return run_module("experiments.train", *TINY, *overrides)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.write_bytes(b"not a checkpoint"), "cannot be read (truncated or corrupt?)"),
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "cannot be read (truncated or corrupt?)"),
        (lambda p: torch.save({"weights": torch.zeros(3)}, p), "is not a checkpoint of experiments.train"),
    ],
    ids=["garbage", "truncated", "foreign"],
)
def test_unusable_checkpoints_fail_in_one_line(compose_cfg, tmp_path, corrupt, message):
    run_dir = tmp_path / "run"
    train(compose_cfg(), run_dir)
    corrupt(run_dir / "checkpoints" / "last.pt")
    before = _lines(run_dir)
    out = _run_cli(f"hydra.run.dir={run_dir}", "resume=true")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: checkpoint {run_dir}/checkpoints/last.pt {message}"
    )
    assert _lines(run_dir) == before  # nothing rewritten


def test_checkpoint_of_another_model_fails_in_one_line(compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train(compose_cfg(), run_dir)
    out = _run_cli(f"hydra.run.dir={run_dir}", "resume=true", "model.generator.depth=1")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: cannot resume {run_dir}: the config differs from the stored run in: model.generator.depth"
    ]


def test_unwritable_results_folder_fails_before_anything(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = _run_cli(f"hydra.run.dir={blocker}/run")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={blocker}/run: cannot write there ({blocker} is not a writable folder)"
    ]
    if os.geteuid() != 0:  # root may write into read-only folders, so this half only runs unprivileged
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert _run_cli(f"hydra.run.dir={locked}/run").returncode == 2
