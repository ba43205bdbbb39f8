"""Faults a shared machine and a cluster produce: damaged checkpoints and run files, two processes in
one run folder, a disk that stops taking writes. Each ends in one line, never a traceback, and leaves
every JSON file whole."""

import json
import os
import resource
import shutil
import subprocess
import sys
import time

import pytest
import torch

from experiments.evaluate import evaluate_run
from experiments.sample import sample_run
from gan.config import ConfigError
from gan.trainer import train
from tests.conftest import ROOT, TINY, compose_train, run_module
from tests.test_train import _write_hydra_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A completed tiny run with its .hydra/ config, as experiments.train leaves it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    cfg = compose_train()
    _write_hydra_config(cfg, run_dir)
    train(cfg, run_dir)
    return run_dir


def _snapshot(run_dir):
    """Every file below ``run_dir`` (but the lock) with its bytes."""
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".lock"}


def _valid(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def _with(**changes):
    def corrupt(path):
        state = torch.load(path, weights_only=True)
        for key, value in changes.items():
            if value is KeyError:
                del state[key]
            else:
                state[key] = value
        torch.save(state, path)

    return corrupt


def _shape_of_first_weight(path):
    state = torch.load(path, weights_only=True)
    name = next(iter(state["generator"]))
    state["generator"][name] = torch.zeros(3, 3)
    torch.save(state, path)


def _bytes(data):
    return lambda path: path.write_bytes(data)


def _cut(fraction):
    return lambda path: path.write_bytes(path.read_bytes()[: int(len(path.read_bytes()) * fraction)])


RANDOM = torch.Generator().manual_seed(0)
DAMAGED = {
    "empty": _bytes(b""),
    "text hello": _bytes(b"hello"),
    "text json": _bytes(b'{"step": 3}'),
    "random 16 bytes": _bytes(bytes(torch.randint(256, (16,), generator=RANDOM).tolist())),
    "random 4 KiB": _bytes(bytes(torch.randint(256, (4096,), generator=RANDOM).tolist())),
    "cut at 1%": _cut(0.01),
    "cut at 50%": _cut(0.5),
    "cut at 99%": _cut(0.99),
    "a list": lambda p: torch.save([1, 2, 3], p),
    "a number": lambda p: torch.save(7, p),
    "a tensor": lambda p: torch.save(torch.zeros(3), p),
    "foreign dict": lambda p: torch.save({"weights": torch.zeros(3)}, p),
    "no generator": _with(generator=KeyError),
    "no critic": _with(critic=None),
    "no optimiser state": _with(opt_g=KeyError),
    "step -7": _with(step=-7),
    "step beyond train.steps": _with(step=10**9),
    "step as text": _with(step="3"),
    "step as bool": _with(step=True),
    "step as float": _with(step=2.5),
    "elapsed negative": _with(elapsed=-1.0),
    "elapsed NaN": _with(elapsed=float("nan")),
    "config as text": _with(config="seed: 0"),
    "rng as floats": _with(train_rng=torch.zeros(10)),
    "global rng as floats": _with(torch_rng=torch.zeros(5000)),
    "weight of wrong shape": _shape_of_first_weight,
    "generator as list": _with(generator=[1, 2]),
    "optimiser as number": _with(opt_g=5),
    "optimiser state garbage": _with(opt_c={"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": []}),
    "critic weights as text": _with(critic={"net.0.weight": "x"}),
}


def _one_line(exc: ConfigError) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_checkpoint_is_one_line_for_resume_evaluate_and_sample(finished, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    DAMAGED[damage](run_dir / "checkpoints" / "last.pt")
    before = _snapshot(run_dir)
    cfg = compose_train("resume=true", "train.steps=8")
    for attempt in (
        lambda: train(cfg, run_dir),
        lambda: evaluate_run(run_dir),
        lambda: sample_run(run_dir, n=4),
    ):
        with pytest.raises(ConfigError) as info:
            attempt()
        _one_line(info.value)
        assert _snapshot(run_dir) == before  # nothing written, nothing removed


@pytest.mark.slow
def test_the_entry_point_turns_a_damaged_checkpoint_into_exit_code_2(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "checkpoints" / "last.pt").write_text("hello")
    out = run_module("experiments.train", *TINY, "resume=true", f"hydra.run.dir={run_dir}")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: checkpoint {run_dir}/checkpoints/last.pt cannot be read (truncated or corrupt?): "
        + out.stderr.split("corrupt?): ", 1)[1].strip()
    ]


def test_a_half_written_last_metrics_line_is_dropped_and_redone(finished, tmp_path):
    interrupted = tmp_path / "interrupted"
    train(compose_train("train.steps=4"), interrupted)  # checkpoint at step 4, its line written
    with (interrupted / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "w1_ex')  # a kill in the middle of the next line
    train(compose_train("train.steps=6", "resume=true"), interrupted)
    assert (interrupted / "metrics.jsonl").read_text() == (finished / "metrics.jsonl").read_text()


def test_a_damaged_metrics_line_before_the_last_is_one_line(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines[0] = lines[0][:20]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    checkpoint = run_dir / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["step"] = 4  # resume from before the last evaluation, so that the file is read
    torch.save(state, checkpoint)
    with pytest.raises(ConfigError, match=r"metrics.jsonl line 1 is not valid JSON, and 2 line\(s\) follow$"):
        train(compose_train("resume=true"), run_dir)


# ---------------------------------------------------------------------------------------------------
# Two processes, one folder


SLOW = [*TINY, "train.steps=400", "eval.every=100", "eval.plot=false"]


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_stops_in_one_line_and_the_first_finishes(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *SLOW, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").exists():  # the first process holds the folder
        assert first.poll() is None and time.monotonic() < deadline, "the first run ended or never started"
        time.sleep(0.05)
    second = run_module("experiments.train", *SLOW, "resume=true", f"hydra.run.dir={run_dir}")
    assert first.poll() is None  # the second one did not wait for the first to end
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines() == [
        f"error: {run_dir} is in use by process {first.pid}: one run folder takes one process at a time"
    ]
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    events = list((run_dir / "tb").rglob("events.out.tfevents*"))
    assert len(events) == len({e.parent for e in events}) == 4  # one file per writer: the run, its 3 series
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 100, 200, 300, 400]


def test_the_lock_of_a_process_that_ended_does_not_block(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / ".lock").write_text("999999\n")  # left by a killed process: the OS released its lock
    assert train(compose_train("resume=true", "train.steps=8"), run_dir)["status"] == "completed"


# ---------------------------------------------------------------------------------------------------
# Out of disk


def _limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
# A checkpoint takes 48 kB, the events of the whole run 142 kB.
@pytest.mark.parametrize("limit", [40_000, 100_000], ids=["early", "late"])
def test_a_full_disk_fails_the_run_in_one_line_and_leaves_whole_json(tmp_path, limit):
    run_dir = tmp_path / "run"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "experiments.train", *TINY, "train.steps=60", "eval.every=10",
         "train.checkpoint_every=10", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(limit),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "File too large" in lines[0], lines
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "File too large" in summary["error"]
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())  # every JSON file whole
    assert not list(run_dir.rglob("*.tmp"))  # no temporary file left behind


# ---------------------------------------------------------------------------------------------------
# Exact solves that stop before optimality


def test_every_capped_exact_solve_is_counted(monkeypatch, tmp_path, caplog):
    import metrics.ot

    monkeypatch.setattr(metrics.ot, "default_max_iter", lambda n, m: 1)  # every network simplex stops
    cfg = compose_train(
        "objective=exact_ot", "eval.solver=emd", "train.steps=3", "eval.every=3", "train.log_every=1"
    )
    with caplog.at_level("WARNING"):
        summary = train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # Per evaluation: w1_exact, w2_exact, w1_real_real and w1_large; exact_ot has no critic.
    assert [row["ot_nonoptimal"] for row in rows] == [4, 4]
    # Three training steps, each with one capped solve in the loss.
    assert summary["ot_nonoptimal_total"] == 4 + 4 + 3
    logged = caplog.text
    assert "for w1_exact, w2_exact stopped before optimality" in logged
    assert "for w1_real_real stopped" in logged and "for w1_large stopped" in logged
    assert "the exact OT solve of the loss stopped before optimality" in logged


def test_a_capped_plan_is_counted_in_the_critic_diagnostics(monkeypatch, tmp_path):
    import metrics.ot

    monkeypatch.setattr(metrics.ot, "default_max_iter", lambda n, m: 1)
    cfg = compose_train("eval.solver=emd", "train.steps=1", "eval.every=1", "eval.probe_every=0")
    train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["ot_nonoptimal"] for row in rows] == [5, 5]  # the four distances and grad_ot_cosine's plan
