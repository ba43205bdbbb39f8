"""Shared fixtures: the real config, composed with Hydra's compose API and shrunk to a test budget."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from scripts.check_run_folder import problems

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
CHECK_RUN_FOLDER = ROOT.parent / "shared" / "tools" / "check-run-folder"

# Test models are tiny: one thread each is faster than two fighting over the cores, and subprocesses
# (CLI and sweep tests) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

TINY = [
    "train.steps=6",
    "train.batch_size=32",
    "train.log_every=2",
    "train.checkpoint_every=4",
    "train.progress=false",
    "eval.every=3",
    "eval.batch_size=32",
    "eval.large_n=64",
    "eval.probe_steps=4",
    "eval.image_quality=false",  # image runs would train a feature classifier; tests that need it ask
    "model.generator.width=16",
    "model.critic.width=16",
]


def compose_train(*overrides, tiny=TINY):
    """The composed train config with ``tiny`` (the test budget) and then ``overrides`` applied."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=[*tiny, *overrides])
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def compose_cfg():
    """``compose_cfg(*overrides)`` gives the composed train config at the tiny test budget."""
    return compose_train


def run_module(module: str, *args, cwd=ROOT, timeout: float = 300, env: dict | None = None):
    """``python -m <module> <args>`` in a subprocess that imports this checkout; the finished process."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def check_run_folder(*run_dirs):
    """Fail the test when a folder breaks the run-folder contract (:mod:`scripts.check_run_folder`); where
    the independent checker of the shared tools is beside this checkout, it must agree."""
    found = [f"{d}: {problem}" for d in run_dirs for problem in problems(d)]
    assert not found, "\n".join(found)
    if CHECK_RUN_FOLDER.exists():
        out = subprocess.run(
            [sys.executable, str(CHECK_RUN_FOLDER), *map(str, run_dirs)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr
