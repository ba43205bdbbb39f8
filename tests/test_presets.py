"""The claim presets in conf/experiment/: each composes, each job of its sweep builds, the image presets
train a few steps, and a sweep runs."""

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
from tests.conftest import CONF, ROOT, TINY, check_run_folder, compose_train

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER = "_paper"
# The 2-D illustrations of the claims, and the image presets that test them (experiments.claims).
TOY = ["claim1_critic_vs_w1", "claim2_approximation_vs_quality", "claim4_gradient_field"]
IMAGES = [
    "claim1_critic_vs_w1_mnist",
    "claim2_approximation_vs_quality_mnist",
    "claim2_approximation_vs_quality_mnist_dcgan",
    "claim2_critic_steps_mnist",
    "claim4_gradient_field_mnist",
]
CLAIM2_OBJECTIVES = {"wgan_gp", "ctransform", "c_eps", "exact_ot", "sinkhorn"}
# What a paper preset may change in its base preset: budgets, and the seeds it sweeps; an image preset's
# twin may also move to the full dataset, widen the models and sweep more values.
BUDGET_KEYS = {
    "train.steps", "eval.every", "eval.large_n", "eval.probe_every", "eval.probe_steps",
    "hydra.sweeper.params.seed",
}  # fmt: skip


def twin_may_change(key: str, preset: str) -> bool:
    if key in BUDGET_KEYS:
        return True
    image = preset.removesuffix(PAPER) in IMAGES
    return image and (key.startswith(("data.", "hydra.sweeper.params.")) or key.endswith(".width"))


def train_briefly(cfg, run_dir):
    """Train ``cfg`` in this process (the one place that names the training function)."""
    from gan.trainer import train

    return train(cfg, run_dir)


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


def sweep_values(params, key) -> list[str]:
    """The values ``hydra.sweeper.params[key]`` sweeps, as strings (one value is a sweep of one)."""
    override = OverridesParser.create().parse_override(f"{key}={params[key]}")
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(override.value())]


def leaves(cfg) -> dict:
    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node

    return dict(walk(OmegaConf.to_container(cfg, resolve=False), ""))


def test_there_are_toy_and_image_presets_for_claims_1_2_and_4_with_paper_twins():
    small = [p for p in PRESETS if not p.endswith(PAPER)]
    assert sorted(small) == sorted(TOY + IMAGES)
    assert sorted(PRESETS) == sorted([*small, *(p + PAPER for p in small)])


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_validates_and_sweeps_known_options(compose_full, preset):
    cfg = compose_full(f"experiment={preset}")
    assert cfg.hydra.runtime.choices.experiment == preset
    validate_job(cfg)
    params = cfg.hydra.sweeper.params
    assert len(sweep_values(params, "seed")) >= 3 and len(sweep_jobs(params)) >= 3
    for key in params:
        values = sweep_values(params, key)
        if key in GROUPS:
            assert set(values) <= set(group_options(key)), (key, values)
        else:
            assert OmegaConf.select(cfg, key) is not None, key  # a key of the config, e.g. seed
    # Small presets run in minutes on 2 CPU cores (image jobs: at most about 10 minutes on one core, as
    # measured in their comments); paper ones scale the budgets (next test).
    if preset in TOY:
        assert cfg.train.steps <= 1000 and cfg.eval.large_n <= 1024
    if preset in IMAGES:
        assert cfg.hydra.runtime.choices.data == "mnist5k" and cfg.train.batch_size == 64
        assert cfg.train.steps <= 2000 and cfg.eval.large_n <= 1024 and cfg.eval.batch_size == 64


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.endswith(PAPER)])
def test_paper_preset_changes_only_the_budgets_of_its_base(compose_full, preset):
    base = leaves(compose_full(f"experiment={preset.removesuffix(PAPER)}"))
    paper = leaves(compose_full(f"experiment={preset}"))
    # Hydra's own record of the job (choices, overrides, folder name) differs by the preset's name.
    keys = {
        k for k in base.keys() | paper.keys() if not k.startswith("hydra.") or k.startswith("hydra.sweeper.")
    }
    changed = {k for k in keys if base.get(k) != paper.get(k)}
    assert changed and all(twin_may_change(k, preset) for k in changed), changed
    assert paper["train.steps"] >= 10 * base["train.steps"]
    sweeps = {k.removeprefix("hydra.sweeper.params.") for k in base if k.startswith("hydra.sweeper.params.")}
    base_params, paper_params = (compose_full(f"experiment={p}").hydra.sweeper.params
                                 for p in (preset.removesuffix(PAPER), preset))  # fmt: skip
    assert set(paper_params) == sweeps
    for key in sweeps:  # the twin sweeps every value of its base, and more seeds
        assert set(sweep_values(base_params, key)) <= set(sweep_values(paper_params, key)), key
    assert set(sweep_values(base_params, "seed")) < set(sweep_values(paper_params, "seed"))


def test_claim2_image_presets_vary_only_the_objective_or_the_critic_steps(compose_full):
    params = compose_full("experiment=claim2_approximation_vs_quality_mnist").hydra.sweeper.params
    assert set(params) == {"objective", "seed"}  # same data, models, batch size and steps for all five
    assert set(sweep_values(params, "objective")) == CLAIM2_OBJECTIVES
    params = compose_full("experiment=claim2_critic_steps_mnist").hydra.sweeper.params
    assert set(params) == {"objective", "objective.critic_steps", "seed"}
    assert sweep_values(params, "objective") == ["wgan_gp"]
    assert len(sweep_values(params, "objective.critic_steps")) >= 3
    # Claims 1 and 4 on images are jobs of claim 2's sweep (experiments.claims reads them there).
    readers = {
        "claim1_critic_vs_w1_mnist": {"wgan_gp"},
        "claim4_gradient_field_mnist": {"wgan_gp", "ctransform", "c_eps"},
    }
    for preset, objectives in readers.items():
        cfg, claim2 = (compose_full(f"experiment={p}", "objective=wgan_gp", "seed=0")
                       for p in (preset, "claim2_approximation_vs_quality_mnist"))  # fmt: skip
        assert set(sweep_values(cfg.hydra.sweeper.params, "objective")) == objectives
        assert OmegaConf.to_container(cfg, resolve=False) | {"hydra": None} == (
            OmegaConf.to_container(claim2, resolve=False) | {"hydra": None}
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


@pytest.mark.parametrize("preset", IMAGES)
def test_image_preset_trains_a_few_steps(compose_full, preset, tmp_path):
    params = compose_full(f"experiment={preset}").hydra.sweeper.params
    first = [o for o in sweep_jobs(params)[0] if not o.startswith("seed=")]  # the sweep's first job
    cfg = compose_train(f"experiment={preset}", *first)
    summary = train_briefly(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["steps_done"] == 6, summary
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 3, 6] and "probe_gap" in rows[0]


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
