"""Every objective through the composed config, and each objective's own promises."""

import json

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import nn

from gan.copies import Single
from gan.data import MixtureOfGaussians
from gan.evaluation import evaluate
from gan.models import MLPCritic, MLPGenerator
from gan.objectives import WGANGP, WGANLP, WGANClip
from gan.runfolder import tb_dir
from gan.runlog import COMPARE_TAG
from gan.trainer import train
from metrics.ot import sinkhorn_divergence, w1_differentiable, wasserstein
from tests.conftest import check_run_folder
from tests.test_train import _rows, _write_hydra_config

OBJECTIVES = [
    "wgan_gp",
    "wgan_clip",
    "wgan_lp",
    "wgan_sn",
    "ctransform",
    "c_eps",
    "exact_ot",
    "sinkhorn",
    "ns_gan",
]
WITHOUT_CRITIC = {"exact_ot", "sinkhorn"}
OT_KEYS = {"step", "w1_exact", "w2_exact", "w1_real_real", "ot_nonoptimal", "w1_large"}
QUALITY_KEYS = {"modes_covered", "high_quality_frac"}
CRITIC_KEYS = {
    "critic_estimate", "critic_gap", "critic_rel_error",
    "ctransform_bound", "lipschitz_max", "grad_ot_cosine",
}  # fmt: skip
PROBE_KEYS = {"probe_estimate", "probe_gap"}
LOSS_TAGS = {"exact_ot": {"loss/w1"}, "sinkhorn": {"loss/sinkhorn"}}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_trains_and_writes_its_metrics(compose_cfg, tmp_path, name):
    # Two steps, evaluated at 0, 1 and 2; the probe runs at every second evaluation (steps 0 and 2).
    cfg = compose_cfg(
        f"objective={name}",
        "train.steps=2",
        "train.log_every=1",
        "eval.every=1",
        "eval.probe_every=2",
        "eval.probe_steps=2",
        "eval.plot=false",
    )
    _write_hydra_config(cfg, tmp_path)
    summary = train(cfg, tmp_path)

    assert summary["status"] == "completed"
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    critic_keys = set() if name in WITHOUT_CRITIC else CRITIC_KEYS
    for r in rows:
        probe = set() if name in WITHOUT_CRITIC or r["step"] == 1 else PROBE_KEYS
        assert set(r) == OT_KEYS | QUALITY_KEYS | critic_keys | probe, r["step"]
        if critic_keys:
            assert r["ctransform_bound"] <= r["w1_exact"] + 1e-9
            assert -1 <= r["grad_ot_cosine"] <= 1
        if probe:
            assert r["probe_gap"] == pytest.approx(r["probe_estimate"] - r["w1_exact"])
    check_run_folder(tmp_path)

    acc = EventAccumulator(str(tb_dir(tmp_path)), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"ot/w1_exact", "ot/w1_real_real", "quality/w1_large"} <= tags
    assert LOSS_TAGS.get(name, {"loss/critic", "loss/generator"}) <= tags
    if name in WITHOUT_CRITIC:
        assert not any(t.startswith("critic/") for t in tags)
    else:
        assert {
            f"critic/{k}" for k in ("estimate", "ctransform_bound", "probe_estimate", "lipschitz_max")
        } <= tags

    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = [list(c.multiline.tag) for cat in layout.category for c in cat.chart]
    assert all(set(chart) <= tags | {COMPARE_TAG} for chart in charts)  # no chart of tags never written
    assert [COMPARE_TAG] in charts
    estimates = ["critic/estimate", "critic/probe_estimate", "critic/ctransform_bound"]
    assert (estimates in charts) == (name not in WITHOUT_CRITIC)


def test_exact_ot_gradients_agree_with_finite_differences():
    # Generic points: the optimal plan is unique and locally constant, so W1 is smooth there.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = (torch.randn(5, 2, generator=gen, dtype=torch.float64) + 0.7).requires_grad_(True)
    value, converged = w1_differentiable(x, y)
    assert converged and value.item() == pytest.approx(wasserstein(x, y), abs=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: w1_differentiable(a, b)[0], (x, y), eps=1e-6, atol=1e-6)


def test_exact_ot_gradient_is_finite_at_coincident_points():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    y = x.clone().requires_grad_(True)
    value, _ = w1_differentiable(x, y)
    value.backward()
    assert value.item() < 1e-100 and torch.isfinite(y.grad).all()


def test_sinkhorn_divergence_is_zero_on_equal_clouds_and_tends_to_w1():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 2, generator=gen, dtype=torch.float64) + 1.5
    assert sinkhorn_divergence(x, x, eps=0.5).item() == pytest.approx(0, abs=1e-9)
    values = [
        sinkhorn_divergence(x, y, eps=eps, tol=1e-7, max_iter=20_000).item() for eps in (1.0, 0.1, 0.01)
    ]
    w1 = wasserstein(x, y)
    assert all(v > 0 for v in values)
    errors = [abs(v - w1) for v in values]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.02 * w1


def test_sinkhorn_envelope_gradient_agrees_with_finite_differences():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    y = (torch.randn(6, 2, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda b: sinkhorn_divergence(x, b, eps=0.5, tol=1e-12, max_iter=10_000), (y,), eps=1e-6, atol=1e-5
    )


def test_one_sided_and_two_sided_penalties():
    # f(x) = s <x, e1>: slope s everywhere. GP penalises s != 1 both ways, LP only s > 1.
    real, fake = torch.randn(1, 16, 2), torch.randn(1, 16, 2)
    gen = torch.Generator().manual_seed(0)
    for slope, gp, lp in ((0.5, 0.25, 0.0), (1.0, 0.0, 0.0), (3.0, 4.0, 4.0)):

        def critic(x, s=slope):
            return s * x[..., 0]

        for objective, penalty in ((WGANGP(1, None, None, 10.0), gp), (WGANLP(1, None, None, 10.0), lp)):
            losses = objective.critic_loss(critic, real, fake, [gen])
            assert losses["penalty"].item() == pytest.approx(penalty)
            assert losses["loss"].item() == pytest.approx(losses["critic"].item() + 10.0 * penalty)


def test_weight_clipping_clamps_every_parameter():
    critic = MLPCritic(width=8, depth=2, in_shape=(2,))
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(100)
    WGANClip(1, None, None, clip_value=0.01).after_critic_step(Single(critic))
    assert all(p.abs().max() <= 0.01 for p in critic.parameters())


@pytest.mark.parametrize("name", ["wgan_gp", "wgan_sn", "ctransform"])
def test_evaluation_and_probe_leave_the_training_state_alone(compose_cfg, name):
    cfg = compose_cfg(f"objective={name}", "eval.probe_steps=10", "eval.probe_lr=0.01")
    data = MixtureOfGaussians("ring", 8, 2.0, 0.02)
    torch.manual_seed(0)
    generator = MLPGenerator(latent_dim=8, width=16, depth=2, out_shape=(2,))
    objective = instantiate(cfg.objective)
    critic = objective.prepare_critic(MLPCritic(width=16, depth=2, in_shape=(2,)))
    opt_g = objective.generator_optimizer(generator.parameters())
    opt_c = objective.critic_optimizer(critic.parameters())
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (generator, critic)] + [
        json.dumps(str(o.state_dict())) for o in (opt_g, opt_c)
    ]
    modes = (generator.training, critic.training)
    global_rng = torch.get_rng_state()

    def run():
        rng = torch.Generator().manual_seed(123)
        return evaluate(generator, critic, data, objective, cfg.eval, rng=rng, index=0)

    first, second = run(), run()
    assert first == second  # randomness from the evaluation generator only
    assert torch.equal(torch.get_rng_state(), global_rng)
    after = [{k: v.clone() for k, v in m.state_dict().items()} for m in (generator, critic)]
    for b, a in zip(before[:2], after, strict=True):
        assert all(torch.equal(b[k], a[k]) for k in b)
    assert before[2:] == [json.dumps(str(o.state_dict())) for o in (opt_g, opt_c)]
    assert (generator.training, critic.training) == modes
    # The probe trains a copy towards this objective's optimum on the evaluation batches.
    assert abs(first["probe_gap"]) < abs(first["critic_gap"])


def test_probe_every_counts_evaluations(compose_cfg):
    cfg = compose_cfg("eval.probe_every=3", "eval.probe_steps=1", "eval.batch_size=16")
    data = MixtureOfGaussians("ring", 8, 2.0, 0.02)
    generator = MLPGenerator(latent_dim=8, width=8, depth=1, out_shape=(2,))
    objective = instantiate(cfg.objective)
    critic: nn.Module = MLPCritic(width=8, depth=1, in_shape=(2,))
    probed = [
        "probe_estimate"
        in evaluate(generator, critic, data, objective, cfg.eval, rng=torch.Generator(), index=i)
        for i in range(7)
    ]
    assert probed == [True, False, False, True, False, False, True]


@pytest.mark.parametrize("name", ["wgan_sn", "exact_ot"])
def test_evaluation_cadence_and_resume_do_not_change_training(compose_cfg, tmp_path, name):
    # Spectral normalisation carries state (the power-iteration vectors) that evaluations, plots and
    # the probe must leave alone; a run without a critic checkpoints and resumes without one.
    train(compose_cfg(f"objective={name}", "eval.every=3"), tmp_path / "sparse")
    train(compose_cfg(f"objective={name}", "eval.every=1"), tmp_path / "dense")
    dense = {r["step"]: r for r in _rows(tmp_path / "dense")}
    assert all(dense[r["step"]] == r for r in _rows(tmp_path / "sparse"))
    train(compose_cfg(f"objective={name}", "train.steps=4"), tmp_path / "resumed")
    train(compose_cfg(f"objective={name}", "resume=true"), tmp_path / "resumed")
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "sparse")
