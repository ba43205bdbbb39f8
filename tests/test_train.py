"""Training through the composed config: the run folder, TensorBoard, determinism."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan.runfolder import tb_dir
from gan.runlog import COMPARE_TAG, COMPARED
from gan.trainer import train
from tests.conftest import check_run_folder

EVAL_KEYS = {
    "step", "w1_exact", "w2_exact", "w1_real_real", "ot_nonoptimal",
    "critic_estimate", "critic_gap", "critic_rel_error", "w1_large",
}  # fmt: skip


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _write_hydra_config(cfg, run_dir):
    # What Hydra writes into .hydra/ for a real run; train() itself never needs it.
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


@pytest.mark.parametrize("data", ["gaussians8", "gaussians25", "swissroll"])
def test_smoke_run_writes_the_run_folder(compose_cfg, tmp_path, data):
    cfg = compose_cfg(f"data={data}")
    _write_hydra_config(cfg, tmp_path)
    summary = train(cfg, tmp_path)

    assert summary["status"] == "completed"
    assert summary["steps_done"] == 6
    assert summary["elapsed_s"] >= summary["eval_s"] > 0
    assert summary["train_s"] == pytest.approx(summary["elapsed_s"] - summary["eval_s"], abs=2e-3)
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [0, 3, 6]
    expected = EVAL_KEYS | ({"modes_covered", "high_quality_frac"} if data != "swissroll" else set())
    assert all(expected <= set(r) for r in rows)
    assert summary["final"] == rows[-1]
    for r in rows:
        assert r["w1_exact"] <= r["w2_exact"] + 1e-12
        assert r["critic_gap"] == pytest.approx(r["critic_estimate"] - r["w1_exact"])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))

    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 6 and set(ckpt["generator"]) and set(ckpt["critic"])
    check_run_folder(tmp_path)


def test_tensorboard_has_the_layout_the_image_and_stable_tags(compose_cfg, tmp_path):
    train(compose_cfg(), tmp_path)
    acc = EventAccumulator(str(tb_dir(tmp_path)), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in (
        "ot/w1_exact",
        "ot/w1_real_real",
        "ot/w2_exact",
        "critic/estimate",
        "critic/gap",
        "quality/w1_large",
        "quality/modes_covered",
        "loss/critic",
        "loss/penalty",
        "loss/generator",
    ):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("ot/w1_exact")] == [0, 3, 6]
    w1 = [json.loads(line)["w1_exact"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("ot/w1_exact")] == pytest.approx(w1, rel=1e-6)
    images = acc.Images("samples/real_vs_generated")
    assert len(images) == 3 and images[0].encoded_image_string.startswith(b"\x89PNG")

    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert [COMPARE_TAG] in charts.values()
    # The compared series, each a run of its own under one tag, hold the evaluations' values.
    for key in COMPARED:
        series = EventAccumulator(str(tb_dir(tmp_path) / key), size_guidance={"scalars": 0})
        series.Reload()
        values = [json.loads(line)[key] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        assert [e.value for e in series.Scalars(COMPARE_TAG)] == pytest.approx(values, rel=1e-6)

    hparams = EventAccumulator(str(tb_dir(tmp_path)))
    hparams.Reload()
    plugin = hparams.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(
        plugin
    )


def test_same_seed_same_numbers_other_seed_other_numbers(compose_cfg, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train(compose_cfg("seed=1"), a)
    train(compose_cfg("seed=1"), b)
    train(compose_cfg("seed=2"), c)
    assert _rows(a) == _rows(b)
    assert _rows(a) != _rows(c)


def test_evaluation_cadence_does_not_change_training(compose_cfg, tmp_path):
    # Evaluation draws from its own (seed, step) generator, so evaluating more often leaves the
    # trajectory and the shared evaluation steps unchanged.
    train(compose_cfg("eval.every=3"), tmp_path / "a")
    train(compose_cfg("eval.every=1"), tmp_path / "b")
    sparse = {r["step"]: r for r in _rows(tmp_path / "a")}
    dense = {r["step"]: r for r in _rows(tmp_path / "b")}
    assert all(dense[s] == row for s, row in sparse.items())


def test_image_run_logs_quality_and_sample_grids(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "data=digits", "model=dcgan", "eval.image_quality=true", f"eval.classifier_dir={tmp_path / 'cls'}",
        "eval.large_n=200",
    )  # fmt: skip
    train(cfg, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    for key in ("fid", "kid_mean", "precision", "recall", "label_entropy", "w1_large", "w1_exact"):
        assert all(key in r for r in rows), key
    assert rows[0]["fid"] > 0 and 0 <= rows[-1]["precision"] <= 1
    acc = EventAccumulator(str(tb_dir(tmp_path / "run")), size_guidance={"images": 0})
    acc.Reload()
    assert len(acc.Images("samples/generated")) == len(rows)
    assert len(acc.Images("samples/real")) == 1
    assert (tmp_path / "cls").is_dir() and any((tmp_path / "cls").iterdir())  # the classifier was cached
