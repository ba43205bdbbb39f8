"""The claim presets in conf/experiment/: each composes, each job of its sweep builds, and a sweep runs."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from gan.config import GROUPS, group_options, validate
from gan.trainer import build
from tests.conftest import CONF, ROOT, TINY, check_run_folder

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER = "_paper"
# What a paper preset may change in its base preset: budgets, and the seeds it sweeps.
BUDGET_KEYS = {
    "train.steps", "eval.every", "eval.large_n", "eval.probe_every", "eval.probe_steps",
    "hydra.sweeper.params.seed",
}  # fmt: skip


@pytest.fixture
def compose_full():
    """``compose_full(*overrides)``: the train config with its ``hydra`` node (the sweeper's params)."""

    def _compose(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)

    yield _compose
    GlobalHydra.instance().clear()


def validate_job(cfg) -> None:
    """The project's own checks, on the config a job sees (``hydra`` holds job-time interpolations)."""
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    validate(job)


def sweep_jobs(params) -> list[list[str]]:
    """The override lists Hydra's basic sweeper makes of ``hydra.sweeper.params``, one per job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch


def leaves(cfg) -> dict:
    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node

    return dict(walk(OmegaConf.to_container(cfg, resolve=False), ""))


def test_there_are_presets_for_claims_1_2_and_4_with_paper_twins():
    small = [p for p in PRESETS if not p.endswith(PAPER)]
    assert sorted(small) == [
        "claim1_critic_vs_w1",
        "claim2_approximation_vs_quality",
        "claim4_gradient_field",
    ]
    assert sorted(PRESETS) == sorted([*small, *(p + PAPER for p in small)])


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_validates_and_sweeps_known_options(compose_full, preset):
    cfg = compose_full(f"experiment={preset}")
    assert cfg.hydra.runtime.choices.experiment == preset
    validate_job(cfg)
    params = cfg.hydra.sweeper.params
    assert "seed" in params and len(sweep_jobs(params)) >= 6
    for key, value in params.items():
        values = list(OverridesParser.create().parse_override(f"{key}={value}").sweep_string_iterator())
        if key in GROUPS:
            assert set(values) <= set(group_options(key)), (key, values)
        else:
            assert OmegaConf.select(cfg, key) is not None, key  # a key of the config, e.g. seed
    # Small presets run in minutes on 2 CPU cores; paper ones only scale the budgets (next test).
    if not preset.endswith(PAPER):
        assert cfg.train.steps <= 1000 and cfg.eval.large_n <= 1024


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.endswith(PAPER)])
def test_paper_preset_changes_only_the_budgets_of_its_base(compose_full, preset):
    base = leaves(compose_full(f"experiment={preset.removesuffix(PAPER)}"))
    paper = leaves(compose_full(f"experiment={preset}"))
    # Hydra's own record of the job (choices, overrides, folder name) differs by the preset's name.
    keys = {
        k for k in base.keys() | paper.keys() if not k.startswith("hydra.") or k.startswith("hydra.sweeper.")
    }
    changed = {k for k in keys if base.get(k) != paper.get(k)}
    assert changed and changed <= BUDGET_KEYS, changed - BUDGET_KEYS
    assert paper["train.steps"] >= 10 * base["train.steps"]
    assert set(str(base["hydra.sweeper.params.seed"]).split(",")) < set(
        str(paper["hydra.sweeper.params.seed"]).split(",")
    )


def test_command_line_choices_override_the_preset(compose_full):
    cfg = compose_full(
        "experiment=claim2_approximation_vs_quality", "objective=exact_ot", "data=swissroll", "seed=4"
    )
    choices = cfg.hydra.runtime.choices
    assert (choices.objective, choices.data, cfg.seed) == ("exact_ot", "swissroll", 4)
    assert cfg.train.steps == 1000  # the rest of the preset still applies


@pytest.mark.parametrize("preset", [p for p in PRESETS if not p.endswith(PAPER)])
def test_every_job_of_the_sweep_builds(compose_full, preset):
    params = compose_full(f"experiment={preset}").hydra.sweeper.params
    jobs = {tuple(o for o in job if not o.startswith("seed=")) for job in sweep_jobs(params)}
    for job in sorted(jobs):
        cfg = compose_full(*TINY, f"experiment={preset}", *job)
        validate_job(cfg)
        data, generator, critic, objective = build(cfg, torch.device("cpu"))
        z = torch.zeros(2, generator.latent_dim)
        assert tuple(generator(z).shape[1:]) == tuple(data.shape), job
        assert (critic is None) == (not objective.uses_critic)


@pytest.mark.slow
def test_claim2_multirun_through_the_cli(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # Quoted: an unquoted a,b value for a hydra.* key is refused ("Sweeping over Hydra's configuration").
    sweep = ['hydra.sweeper.params.objective="wgan_gp,exact_ot"', "hydra.sweeper.params.seed=0"]
    preset = "experiment=claim2_approximation_vs_quality"
    out = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--multirun", preset, *TINY, *sweep,
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    folders = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name.split("_", 1)[0] for p in folders] == ["0", "1"]
    objectives = {}
    for folder in folders:
        overrides = list(OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        assert "experiment=claim2_approximation_vs_quality" in overrides and "seed=0" in overrides
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
        assert config.train.steps == 6 and config.eval.large_n == 64  # the command line beats the preset
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps_done"] == 6, summary
        objective = next(o.split("=", 1)[1] for o in overrides if o.startswith("objective="))
        objectives[objective] = summary["final"]
    assert sorted(objectives) == ["exact_ot", "wgan_gp"]
    assert "critic_estimate" in objectives["wgan_gp"] and "critic_estimate" not in objectives["exact_ot"]
    check_run_folder(*folders)
