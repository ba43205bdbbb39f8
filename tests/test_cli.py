"""The real entry point in a subprocess (a tiny run; bad input: one line, exit code 2, nothing written),
and every kind of bad input refused in-process, where its message comes from."""

import json

import pytest

from gan.config import ConfigError, check_group_choices
from gan.trainer import train
from tests.conftest import TINY, check_run_folder, compose_train, run_module


@pytest.mark.slow
def test_cli_run_writes_a_checked_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["objective=wgan_gp", "data=gaussians25", "seed=3", f"hydra.run.dir={run_dir}"]
    out = run_module("experiments.train", *TINY, *overrides)
    assert out.returncode == 0, out.stderr
    assert f"run folder: {run_dir}" in out.stdout
    assert f"tensorboard --logdir {run_dir}" in out.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("seed=3") == 1
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    check_run_folder(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective=wgan_xx"], "objective=wgan_xx is not an option; choose one of: "),  # before Hydra
        (["train.steps=0"], "train.steps=0: must be a positive integer"),  # the composed config
        (["data=digits", "eval.batch_size=5000"], "eval.batch_size=5000: larger than the 1438 training"),
    ],
    ids=["group", "value", "data"],
)
def test_bad_input_stops_the_entry_point_with_one_line_and_exit_code_2(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    out = run_module("experiments.train", *overrides, f"hydra.run.dir={run_dir}")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    for name in ("metrics.jsonl", "summary.json", "checkpoints", "tb"):
        assert not (run_dir / name).exists(), name


BAD_GROUPS = [
    (["objective=wgan_xx"], "objective=wgan_xx is not an option; choose one of: "),
    (["data=mnist_typo"], "data=mnist_typo is not an option; choose one of: "),
    (["model=resnet"], "model=resnet is not an option; choose one of: "),
    (["eval=fast"], "eval=fast is not an option; choose one of: "),
    (["objective=wgan_gp,wgan_xx"], "objective=wgan_xx is not an option; choose one of: "),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_GROUPS, ids=[" ".join(o) for o, _ in BAD_GROUPS])
def test_unknown_group_options_are_refused_before_hydra_starts(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_group_choices(overrides)
    assert str(info.value).startswith(message)


BAD_VALUES = [
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
    (["objective.penalty_weight=-1"], "objective.penalty_weight=-1: must be a finite number >= 0"),
    (["model.generator.width=0"], "model.generator.width=0: must be a positive integer"),
    (["eval.solver=sinkhorn"], "eval.solver='sinkhorn': must be one of auto, emd, assignment"),
    (["seed=-1"], "seed=-1: must be an integer >= 0"),
    (["train.steps=ten"], "train.steps='ten': must be a positive integer"),
    (["train.on_nan=ignore"], "train.on_nan='ignore': must be one of stop, raise"),
    (["device=gpu"], "device='gpu': must be one of cpu, cuda"),
    (["objective=c_eps", "objective.eps=-1"], "objective.eps=-1: must be a positive number"),
    (["objective=wgan_clip", "objective.clip_value=0"], "objective.clip_value=0: must be a positive number"),
    (["eval.probe_steps=-2"], "eval.probe_steps=-2: must be an integer >= 0"),
    (["data.std=0"], "data.std=0: must be a positive number"),
    (["data=digits", "data.low=1", "data.high=-1"], "data.low=1, data.high=-1: need low < high"),
    (
        ["data=digits", "eval.batch_size=5000"],
        "eval.batch_size=5000: larger than the 1438 training images of this data",
    ),
    (["data=gaussians8", "model=dcgan"], "model.generator for data of shape (2,) cannot be built: "),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_values_are_refused_before_training_and_write_nothing(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        train(compose_train(*overrides), run_dir)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert not run_dir.exists()
