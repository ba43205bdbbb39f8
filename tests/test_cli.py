"""The real entry point in a subprocess: a tiny run, and bad input rejected before training."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY, check_run_folder


def run_train(*overrides, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_run_writes_a_checked_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    out = run_train(*TINY, "objective=wgan_gp", "data=gaussians25", "seed=3", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr
    assert f"run folder: {run_dir}" in out.stdout
    assert f"tensorboard --logdir {run_dir}" in out.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("seed=3") == 1
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    check_run_folder(run_dir)


BAD_INPUTS = [
    (["objective=wgan_xx"], "objective=wgan_xx is not an option; choose one of: "),
    (["data=mnist_typo"], "data=mnist_typo is not an option; choose one of: "),
    (["model=resnet"], "model=resnet is not an option; choose one of: "),
    (["eval=fast"], "eval=fast is not an option; choose one of: "),
    (["train.steps=0"], "train.steps=0: must be a positive integer"),
    (["train.steps=-5"], "train.steps=-5: must be a positive integer"),
    (["train.batch_size=0"], "train.batch_size=0: must be a positive integer"),
    (["eval.batch_size=0"], "eval.batch_size=0: must be a positive integer"),
    (["eval.every=0"], "eval.every=0: must be a positive integer"),
    (["eval.large_n=-1"], "eval.large_n=-1: must be a positive integer"),
    (["objective.critic_optimizer.lr=0"], "objective.critic_optimizer.lr=0: must be a positive number"),
    (
        ["objective.generator_optimizer.lr=-1e-3"],
        "objective.generator_optimizer.lr=-0.001: must be a positive number",
    ),
    (["objective.critic_steps=0"], "objective.critic_steps=0: must be a positive integer"),
    (["objective.penalty_weight=-1"], "objective.penalty_weight=-1: must be a number >= 0"),
    (["model.generator.width=0"], "model.generator.width=0: must be a positive integer"),
    (["eval.solver=sinkhorn"], "eval.solver='sinkhorn': must be one of auto, emd, assignment"),
    (["seed=-1"], "seed=-1: must be an integer >= 0"),
    (["train.steps=ten"], "train.steps='ten': must be a positive integer"),
    (["objective=c_eps", "objective.eps=-1"], "objective.eps=-1: must be a positive number"),
    (["objective=wgan_clip", "objective.clip_value=0"], "objective.clip_value=0: must be a positive number"),
    (["eval.probe_steps=-2"], "eval.probe_steps=-2: must be an integer >= 0"),
    (
        ["data=digits", "eval.batch_size=5000"],
        "eval.batch_size=5000: larger than the 1438 training images of this data",
    ),
    (["data=gaussians8", "model=dcgan"], "model.generator for data of shape (2,) cannot be built: "),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_fails_in_one_line_before_training(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    out = run_train(*overrides, f"hydra.run.dir={run_dir}")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == [f"error: {message}"] or (
        lines[-1].startswith(f"error: {message}") and len(lines) == 1
    ), lines
    assert not (run_dir / "metrics.jsonl").exists()
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "tb").exists()
