"""Image-quality evaluation: the classifier behind the feature-space metrics, the metrics of one
evaluation, and sample grids for TensorBoard.

How a training run uses it: the classifier once before training, then at each evaluation the quality
of the ``eval.large_n`` generated and held-out real images already drawn for ``w1_large`` (``large_n``
bounded by ``data.num_heldout`` for image sets), and a grid from its own generator::

    classifier, inception = quality_networks(data, cfg.eval, device=device)  # None when off
    ...
    add_counted(row, large_sample_w1(fake_large, real_large, solver=solver), W1_LARGE)  # flattened pixels
    row.update(image_quality(fake_large, real_large, classifier=classifier))  # sharpness alone if None
    row.update(inception_fid(fake_large, real_large, extractor=inception, value_range=data.pixel_range))
    ...
    grid = generator_grid(generator, eval_generator(seed, step, device), value_range=data.pixel_range)
    writer.add_image("samples/generated", grid, step)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torchvision.utils import make_grid

from gan.classifier import ImageClassifier, load_classifier, save_classifier, train_classifier
from metrics.quality import (
    CLASSES_COVERED,
    FID,
    KID_MEAN,
    KID_STD,
    LABEL_ENTROPY,
    PR_NEIGHBOURS,
    PRECISION,
    PREDICTION_ENTROPY,
    RECALL,
    SHARPNESS,
    fid_from_features,
    kernel_distance,
    label_statistics,
    precision_recall,
    sharpness,
)

log = logging.getLogger(__name__)

CLASSIFIER_DIR = "classifiers"
# The keys image_quality() returns, in order: in the classifier's feature space or from its labels, then
# in pixels (computed with or without a classifier: a few array operations on the images).
CLASSIFIER_QUALITY_KEYS = (
    FID,
    KID_MEAN,
    KID_STD,
    PRECISION,
    RECALL,
    LABEL_ENTROPY,
    CLASSES_COVERED,
    PREDICTION_ENTROPY,
)
PIXEL_QUALITY_KEYS = (SHARPNESS,)
IMAGE_QUALITY_KEYS = CLASSIFIER_QUALITY_KEYS + PIXEL_QUALITY_KEYS
# KID subsets in one evaluation: 100 draws of up to 500 images (half of a 1,000-image evaluation, so the
# draws differ and the standard deviation means something).
EVAL_KID_SUBSETS = 100
EVAL_KID_SUBSET_SIZE = 500
FID_INCEPTION = "fid_inception"


def is_image_data(data) -> bool:
    """True for the labelled image sets of ``gan.data`` (which the quality metrics need)."""
    return len(getattr(data, "shape", ())) == 3 and hasattr(data, "split")


def classifier_path(data, cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir>/<data.cache_key>.pt``, with ``cache_dir`` defaulting to ``<data.root>/classifiers``."""
    folder = Path(data.root) / CLASSIFIER_DIR if cache_dir is None else Path(cache_dir).expanduser()
    return folder / f"{data.cache_key}.pt"


def load_or_train_classifier(
    data,
    cache_dir: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    retrain: bool = False,
    epochs: int = 6,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 16,
    feature_dim: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> ImageClassifier:
    """The classifier of ``data`` from :func:`classifier_path`, trained and saved there first if the
    file is missing, unreadable, or ``retrain`` is set. Returns it in eval mode on ``device`` with
    ``heldout_accuracy`` set.

    A cached file is reused whatever the training arguments, so that every run on one dataset measures
    quality in the same feature space; ``retrain=True`` replaces it. Training is deterministic on CPU
    and leaves the global random state untouched, so a run gives the same numbers with or without the
    cache.
    """
    path = classifier_path(data, cache_dir)
    if path.exists() and not retrain:
        try:
            model, record = load_classifier(path, device=device)
        except Exception as exc:  # a truncated or foreign file: train a new one
            log.warning("cannot read the cached classifier %s (%s); training a new one", path, exc)
        else:
            log.info(
                "classifier for %s: %s (held-out accuracy %.4f)", data.name, path, model.heldout_accuracy
            )
            return model
    training = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "width": width,
        "feature_dim": feature_dim, "seed": seed,
    }  # fmt: skip
    model = train_classifier(data, device=device, progress=progress, **training)
    save_classifier(path, model, data_key=data.cache_key, training=training)
    log.info("classifier for %s saved to %s", data.name, path)
    return model


def quality_networks(data, eval_cfg, *, device: str | torch.device = "cpu"):
    """The feature networks an evaluation of ``data`` uses: ``(classifier, inception)``, each ``None``
    when off (``eval_cfg.image_quality``, ``eval_cfg.inception_weights``) and both ``None`` for toy data.

    The Inception weights are checked first, so a missing file stops a run with one line
    (:class:`gan.config.ConfigError`) before a classifier is trained or anything is written.
    """
    if not is_image_data(data):
        return None, None
    from gan.config import ConfigError

    inception = None
    if eval_cfg.inception_weights:
        try:
            inception = inception_feature_extractor(eval_cfg.inception_weights)
        except ConfigError as exc:
            raise ConfigError(f"eval.inception_weights: {exc}") from None
    classifier = None
    if eval_cfg.image_quality:
        classifier = load_or_train_classifier(data, eval_cfg.classifier_dir, device=device)
    return classifier, inception


@torch.no_grad()
def image_quality(
    fake: torch.Tensor,
    real_heldout: torch.Tensor,
    *,
    classifier: ImageClassifier | None,
    kid_subsets: int = EVAL_KID_SUBSETS,
    kid_subset_size: int = EVAL_KID_SUBSET_SIZE,
    neighbours: int = PR_NEIGHBOURS,
    seed: int = 0,
) -> dict[str, float]:
    """Quality of generated images against held-out real ones: in ``classifier``'s feature space, and
    the sharpness of their pixels.

    Parameters
    ----------
    fake : tensor, shape (m, C, H, W)
        Generated images, in the data's pixel range.
    real_heldout : tensor, shape (n, C, H, W)
        Held-out real images (drawn without replacement: duplicates distort precision/recall).
    classifier : ImageClassifier or None
        Trained on the same dataset (:func:`load_or_train_classifier`); ``None``: the pixel metrics only.
    kid_subsets, kid_subset_size, neighbours, seed
        Passed to :func:`metrics.quality.kernel_distance` and :func:`metrics.quality.precision_recall`.

    Returns
    -------
    dict
        The keys of ``IMAGE_QUALITY_KEYS``: FID and KID between the two feature sets, precision and
        recall of ``fake``, the label entropy, covered classes and mean prediction entropy of the
        classifier on ``fake``, and ``sharpness`` (:func:`metrics.quality.sharpness`: mean image-gradient
        energy of ``fake`` over that of ``real_heldout``). Without a classifier: ``PIXEL_QUALITY_KEYS``.
    """
    pixels = sharpness(fake, real_heldout)
    if classifier is None:
        return {key: pixels[key] for key in PIXEL_QUALITY_KEYS}
    real_features, _ = classifier.embed(real_heldout)
    fake_features, fake_probs = classifier.embed(fake)
    row = fid_from_features(real_features, fake_features)
    row |= kernel_distance(
        real_features, fake_features, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    row |= precision_recall(real_features, fake_features, k=neighbours)
    row |= label_statistics(fake_probs) | pixels
    return {key: row[key] for key in IMAGE_QUALITY_KEYS}


def sample_grid(
    images: torch.Tensor, *, value_range: tuple[float, float], nrow: int | None = None
) -> torch.Tensor:
    """A grid of images for ``SummaryWriter.add_image``: (3, H', W') float in [0, 1], on CPU.

    ``value_range`` is the data's pixel range (``data.pixel_range``); values outside it are clipped.
    ``nrow`` images per row, by default about the square root of their number.
    """
    images = images.detach().float().cpu()
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return make_grid(
        images, nrow=nrow, padding=2, normalize=True, value_range=tuple(value_range), pad_value=1.0
    )


@torch.no_grad()
def generator_grid(
    generator: torch.nn.Module, rng: torch.Generator, *, value_range: tuple[float, float], n: int = 64
) -> torch.Tensor:
    """:func:`sample_grid` of ``n`` images from ``generator`` (in eval mode, restored after), with
    latents drawn from ``rng``."""
    was_training = generator.training
    generator.eval()
    try:
        z = torch.randn(n, generator.latent_dim, generator=rng, device=rng.device)
        return sample_grid(generator(z), value_range=value_range)
    finally:
        generator.train(was_training)


# ---------------------------------------------------------------------------------------------------
# Opt-in Inception FID, for users who have torch-fidelity and its Inception-v3 weights on disk.


def inception_feature_extractor(weights_path: str | Path) -> torch.nn.Module:
    """torch-fidelity's Inception-v3 (the network of the standard FID) through torchmetrics, from a
    local weights file; its output is the 2048-d pool features of uint8 images (N, 3, H, W).

    Raises :class:`gan.config.ConfigError` (one line) when torch-fidelity is not installed or the
    weights file is missing: they cannot be downloaded offline.
    """
    from gan.config import ConfigError

    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"Inception FID needs the torch-fidelity Inception-v3 weights at {path}, not found; "
            "copy pt_inception-2015-12-05-6726825d.pth there or turn Inception FID off"
        )
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        return NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        ).eval()
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"Inception FID needs torch-fidelity ({exc}); install it or turn Inception FID off"
        ) from exc


@torch.no_grad()
def inception_fid(
    fake: torch.Tensor,
    real_heldout: torch.Tensor,
    *,
    extractor: torch.nn.Module,
    value_range: tuple[float, float],
    batch_size: int = 100,
) -> dict[str, float]:
    """FID in Inception-v3 pool features: images are mapped from ``value_range`` to uint8, grey ones
    repeated to 3 channels (the extractor resizes to 299x299 itself).

    Returns
    -------
    dict
        ``{FID_INCEPTION: Fréchet distance between the two feature sets}``.
    """
    low, high = value_range

    def features(images):
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].detach().float().cpu()
            x = ((x - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            out.append(extractor(x).reshape(len(x), -1).double())
        return torch.cat(out)

    return {FID_INCEPTION: fid_from_features(features(real_heldout), features(fake))[FID]}
