"""A small CNN classifier for a dataset's images; its penultimate layer is the feature space of the
image-quality metrics (FID, KID, precision/recall), since Inception weights cannot be downloaded here.

The classifier is trained on the training split only and its accuracy is measured on the held-out
split, the same split the generator is evaluated against. Files hold plain tensors and numbers, so
they load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class ImageClassifier(nn.Module):
    """``image (B, C, H, W) -> logits (B, num_classes)``.

    Two blocks of (3x3 convolution, batch norm, ReLU, 2x2 max pool) with ``width`` and ``2 width``
    channels, a fully connected ReLU layer of ``feature_dim`` units (the features, :meth:`features`),
    and a linear layer to the class logits. Batch norm speeds up training on these small sets; in eval
    mode (all feature extraction) it is a fixed per-sample affine map.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int = 10, width: int = 16, feature_dim: int = 128
    ):
        super().__init__()
        channels, height, w = (int(s) for s in in_shape)
        if min(height, w) < 4:
            raise ValueError(f"images of {height}x{w} are too small for the classifier (need sides >= 4)")
        self.config = {
            "in_shape": [channels, height, w],
            "num_classes": int(num_classes),
            "width": int(width),
            "feature_dim": int(feature_dim),
        }
        self.in_shape = (channels, height, w)
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (height // 4) * (w // 4), feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        # Set after training so that training images have features of root-mean-square 1 per unit:
        # the KID kernel (x·y/d + 1)^3 then sees O(1) inner products, as with Inception features.
        self.register_buffer("feature_scale", torch.ones((), dtype=torch.float32))
        self.heldout_accuracy = math.nan

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(len(x), *self.in_shape))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations times ``feature_scale``, shape (B, feature_dim)."""
        return self._raw(x) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._raw(x))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, *, batch_size: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, feature_dim) and class probabilities (N, num_classes), float64 on CPU.

        Runs in eval mode on the classifier's device, in batches (the result does not depend on the
        batch size: in eval mode no layer mixes samples).
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        feats, probs = [], []
        try:
            for start in range(0, len(images), batch_size):
                raw = self._raw(images[start : start + batch_size].to(device=device, dtype=torch.float32))
                feats.append((raw * self.feature_scale).double().cpu())
                probs.append(torch.softmax(self.head(raw).double(), dim=1).cpu())
        finally:
            self.train(was_training)
        return torch.cat(feats), torch.cat(probs)


@torch.no_grad()
def accuracy(model: ImageClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    _, probs = model.embed(images)
    return float((probs.argmax(1) == labels.cpu()).double().mean())


def train_classifier(
    data,
    *,
    epochs: int = 6,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 16,
    feature_dim: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ImageClassifier:
    """Train an :class:`ImageClassifier` on ``data``'s training split; returns it in eval mode with
    ``heldout_accuracy`` measured on the held-out split and ``feature_scale`` set from the training split.

    Adam with a cosine learning-rate decay to 0 over ``epochs``, cross-entropy, minibatches shuffled by
    a generator seeded with ``seed``. The global random state is saved and restored around training,
    so training a classifier (or finding it cached) does not change a GAN run that follows.
    """
    device = torch.device(device)
    images, labels = data.split("train")
    heldout_images, heldout_labels = data.split("heldout")
    images, labels = images.to(device), labels.to(device)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = ImageClassifier(data.shape, data.num_classes, width=width, feature_dim=feature_dim).to(device)
        shuffle = torch.Generator(device).manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(images) / batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
        model.train()
        for _ in tqdm(range(epochs), desc=f"classifier {data.name}", unit="epoch", disable=not progress):
            order = torch.randperm(len(images), generator=shuffle, device=device)
            for start in range(0, len(images), batch_size):
                batch = order[start : start + batch_size]
                loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    model.eval()
    raw_features, _ = model.embed(images)  # feature_scale is still 1 here
    model.feature_scale.fill_(float(raw_features.square().mean().rsqrt()))
    model.heldout_accuracy = accuracy(model, heldout_images, heldout_labels)
    log.info(
        "classifier for %s: held-out accuracy %.4f after %d epochs (%.1fs)",
        data.name, model.heldout_accuracy, epochs, time.perf_counter() - started,
    )  # fmt: skip
    return model


def save_classifier(path: str | Path, model: ImageClassifier, *, data_key: str, training: dict) -> None:
    """Write the weights, the constructor arguments, the held-out accuracy, the dataset's
    ``cache_key`` and the training settings atomically to ``path``."""
    from gan.runfolder import atomic_torch_save

    atomic_torch_save(
        Path(path),
        {
            "format_version": FORMAT_VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": model.config,
            "heldout_accuracy": float(model.heldout_accuracy),
            "data_key": data_key,
            "training": dict(training),
        },
    )


def load_classifier(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[ImageClassifier, dict]:
    """Rebuild a classifier saved by :func:`save_classifier`; returns it (eval mode, with
    ``heldout_accuracy`` set) and the stored record without the weights."""
    record = torch.load(Path(path), map_location="cpu", weights_only=True)
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown classifier file format {record.get('format_version')!r}")
    config = record["config"]
    model = ImageClassifier(
        tuple(config["in_shape"]),
        config["num_classes"],
        width=config["width"],
        feature_dim=config["feature_dim"],
    )
    model.load_state_dict(record["state_dict"])
    model.heldout_accuracy = record["heldout_accuracy"]
    model.to(device).eval()
    return model, {k: v for k, v in record.items() if k != "state_dict"}
