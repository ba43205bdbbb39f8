"""Is minibatch W1 a measure of sample quality? k-means centroids against real images (claim 3).

    python -m experiments.centroids                                  # digits, n = 16 ... 256, 25 draws
    python -m experiments.centroids data=mnist5k
    python -m experiments.centroids "batch_sizes=[64]" draws=100 reference=train
    python -m experiments.centroids hydra.run.dir=outputs/my_centroids

Stanczuk, Etmann, Kreusser and Schönlieb (arXiv 2103.01678) argue that the minibatch Wasserstein
distance rewards blurry averages: the ``n`` centroids of a k-means clustering of the training set
(``k = n``) are closer to a batch of ``n`` real images than another batch of real images is, although
no centroid looks like a real image. For each batch size ``n`` and each of ``draws`` repetitions:

* ``C``: the ``n`` centroids of k-means with ``k = n`` on the whole training split (flattened pixels;
  its random state is fixed by ``(seed, n, draw)``, :func:`kmeans_seed`);
* ``x``: ``n`` real training images; ``y``: ``n`` real images from the ``reference`` split
  (``heldout`` by default, so neither ``C`` nor ``x`` was fitted to or drawn from the images of ``y``);
* exact ``W_p(C, y)`` and ``W_p(x, y)`` for ``p = 1, 2`` (:func:`metrics.ot.wasserstein`).

Reported per ``n``: mean ± sd of each and the fraction of draws where the centroids are closer
(``W_p(C, y) < W_p(x, y)``). Writes ``centroids.json`` (every value), ``centroids.md`` (the table) and
``centroids.png`` (centroids beside real images, and the distances against ``n``) into the run folder,
and prints the table.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from experiments.app import exit_or_raise
from gan.config import CENTROIDS, ConfigError, validate
from gan.runfolder import atomic_write_bytes, atomic_write_json
from metrics.ot import wasserstein

log = logging.getLogger(__name__)

REFERENCES = ("heldout", "train")
# Keys of the per-draw values: W_p between the centroids and y, and between two real batches x and y.
CENTROIDS_W1 = "centroids_w1"
REAL_W1 = "real_w1"
CENTROIDS_W2 = "centroids_w2"
REAL_W2 = "real_w2"
KMEANS_ITER = "kmeans_iter"
PAIRS = {1: (CENTROIDS_W1, REAL_W1), 2: (CENTROIDS_W2, REAL_W2)}


def training_points(data) -> np.ndarray:
    """The whole training split of an image set as an (N, C·H·W) float64 array in its pixel range."""
    images, _ = data.split("train")
    return images.reshape(len(images), -1).double().numpy()


def kmeans_seed(seed: int, n: int, draw: int) -> int:
    """k-means' random state for one (n, draw): independent of the other batch sizes and draws run."""
    return int(np.random.SeedSequence([seed, n, draw]).generate_state(1)[0])


def kmeans_centroids(
    points: np.ndarray, k: int, *, seed: int = 0, n_init: int = 1, max_iter: int = 100, tol: float = 1e-4
) -> tuple[np.ndarray, int]:
    """Centroids of k-means (Lloyd, k-means++ initialisation) on ``points``.

    Parameters
    ----------
    points : numpy.ndarray, shape (N, d)
    k : int
        Number of clusters, at most N.
    seed : int
        ``random_state`` of :class:`sklearn.cluster.KMeans`.
    n_init, max_iter, tol
        As in :class:`sklearn.cluster.KMeans`.

    Returns
    -------
    centroids : numpy.ndarray, shape (k, d)
    iterations : int
        Lloyd iterations of the best initialisation (``max_iter`` when it stopped at the cap).
    """
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=seed)
    model.fit(points)
    return model.cluster_centers_, int(model.n_iter_)


def centroid_distances(
    data,
    *,
    batch_sizes=(16, 64),
    draws: int = 10,
    rng: torch.Generator | None = None,
    seed: int = 0,
    reference: str = "heldout",
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-4,
    solver: str = "auto",
    cache: dict[tuple[int, int], tuple[np.ndarray, int]] | None = None,
    progress: bool = False,
) -> dict[int, dict[str, list[float]]]:
    """Exact W1 and W2 of k-means centroids and of a real batch to another real batch, per batch size.

    For each ``n`` in ``batch_sizes`` and each draw ``i``, in this order:
    ``C, iters = kmeans_centroids(training_points(data), n, seed=kmeans_seed(seed, n, i), ...)``,
    ``x = data.sample(n, rng)``, ``y = data.sample_heldout(n, rng)`` (``data.sample`` when
    ``reference="train"``); then ``W_p(C, y)`` and ``W_p(x, y)`` for p = 1, 2.

    Parameters
    ----------
    data : image set from ``gan.data``
        Needs ``split``, ``sample`` and ``sample_heldout``.
    batch_sizes : sequence of int
        At most the size of the training split (and of the reference split).
    draws : int
    rng : torch.Generator, optional
        Source of the real batches (a fresh generator seeded with ``seed`` when omitted).
    seed : int
        Fixes each k-means run through :func:`kmeans_seed`.
    reference : {"heldout", "train"}
        The split ``y`` is drawn from.
    n_init, max_iter, tol
        k-means settings (:func:`kmeans_centroids`).
    solver : {"auto", "emd", "assignment"}
    cache : dict, optional
        ``{(n, draw): (centroids, iterations)}``; filled with every k-means result and read before
        running k-means again, so callers (the figure) reuse the centroids of a run.

    Returns
    -------
    dict
        ``{n: {CENTROIDS_W1, REAL_W1, CENTROIDS_W2, REAL_W2, KMEANS_ITER: [draws values]}}``.
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if rng is None:
        rng = torch.Generator().manual_seed(seed)
    if cache is None:
        cache = {}
    points = training_points(data)
    draw_reference = data.sample_heldout if reference == "heldout" else data.sample
    out: dict[int, dict[str, list[float]]] = {}
    bar = tqdm(total=len(batch_sizes) * draws, desc="k-means + OT", unit="draw", disable=not progress)
    for n in batch_sizes:
        n = int(n)
        values: dict[str, list[float]] = {key: [] for key in (*PAIRS[1], *PAIRS[2], KMEANS_ITER)}
        for i in range(draws):
            if (n, i) not in cache:
                cache[n, i] = kmeans_centroids(
                    points, n, seed=kmeans_seed(seed, n, i), n_init=n_init, max_iter=max_iter, tol=tol
                )
            centroids, iterations = cache[n, i]
            x = data.sample(n, rng)
            y = draw_reference(n, rng)
            for p, (key_c, key_r) in PAIRS.items():
                values[key_c].append(wasserstein(centroids, y, p, solver=solver))
                values[key_r].append(wasserstein(x, y, p, solver=solver))
            values[KMEANS_ITER].append(iterations)
            bar.update(1)
        out[n] = values
    bar.close()
    return out


def summarise(values: dict[int, dict[str, list[float]]]) -> list[dict[str, float]]:
    """Per batch size and p: mean and sample sd (ddof=1) of ``W_p(C, y)`` and ``W_p(x, y)``, and the
    fraction of draws with ``W_p(C, y) < W_p(x, y)``."""
    rows = []
    for n, by_key in values.items():
        row: dict[str, float] = {"n": n, "draws": len(by_key[REAL_W1])}
        for p, keys in PAIRS.items():
            for key in keys:
                v = np.asarray(by_key[key], dtype=np.float64)
                row[f"{key}_mean"] = float(v.mean())
                row[f"{key}_sd"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
            closer = np.asarray(by_key[keys[0]]) < np.asarray(by_key[keys[1]])
            row[f"closer_w{p}"] = float(closer.mean())
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, float]]) -> str:
    def pm(row, key):
        mean, sd = row[f"{key}_mean"], row[f"{key}_sd"]
        return f"{mean:.4g}" if math.isnan(sd) else f"{mean:.4g} ± {sd:.4g}"

    lines = [
        "| n | W1(centroids, y) | W1(x, y) | centroids closer (W1) "
        "| W2(centroids, y) | W2(x, y) | centroids closer (W2) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {pm(r, CENTROIDS_W1)} | {pm(r, REAL_W1)} | {r['closer_w1']:.0%} "
            f"| {pm(r, CENTROIDS_W2)} | {pm(r, REAL_W2)} | {r['closer_w2']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def figure_batch_size(batch_sizes, limit: int) -> int:
    """The batch size whose centroids the figure shows: the largest n <= limit, else the smallest."""
    fitting = [n for n in batch_sizes if n <= limit]
    return max(fitting) if fitting else min(batch_sizes)


def plot_png(
    centroids: torch.Tensor,
    real: torch.Tensor,
    rows: list[dict[str, float]],
    *,
    pixel_range: tuple[float, float],
    title: str,
) -> bytes:
    """Centroids (left) beside real images (middle), as grids; right: mean ± sd of W1 and W2 against n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    def grid(images):
        nrow = math.ceil(math.sqrt(len(images)))
        g = make_grid(images.float(), nrow=nrow, padding=1, normalize=True, value_range=pixel_range)
        return g.permute(1, 2, 0).numpy()

    fig, (ax_c, ax_r, ax_w) = plt.subplots(1, 3, figsize=(13.0, 4.4), width_ratios=[1, 1, 1.3])
    for ax, images, label in ((ax_c, centroids, "k-means centroids"), (ax_r, real, "real training images")):
        ax.imshow(grid(images), interpolation="nearest")
        ax.set_title(f"{len(images)} {label}", fontsize=9)
        ax.axis("off")
    n = np.asarray([r["n"] for r in rows])
    for p, color in ((1, "tab:blue"), (2, "tab:orange")):
        for key, style, label in ((PAIRS[p][0], "o-", "centroids"), (PAIRS[p][1], "s--", "real batch x")):
            mean = np.asarray([r[f"{key}_mean"] for r in rows])
            sd = np.nan_to_num(np.asarray([r[f"{key}_sd"] for r in rows]))
            ax_w.plot(n, mean, style, color=color, label=f"W{p}({label}, y)")
            ax_w.fill_between(n, mean - sd, mean + sd, color=color, alpha=0.15)
    ax_w.set_xscale("log", base=2)
    ax_w.set_xlabel("batch size n (= k)")
    ax_w.set_ylabel("exact minibatch distance to a real batch y")
    ax_w.legend(fontsize=8)
    ax_w.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first bad value (:data:`gan.config.CENTROIDS`; the
    data-dependent limits: :func:`check_data`)."""
    validate(cfg, CENTROIDS)


def check_data(data, cfg: DictConfig, name: str) -> None:
    """Raise :class:`ConfigError` when ``data`` is not an image set or a batch size exceeds a split."""
    if not hasattr(data, "split"):
        raise ConfigError(
            f"data={name}: k-means needs an image set with a training split; "
            "use digits, mnist5k, mnist or cifar10"
        )
    # Real batches are drawn without replacement: a larger n would repeat images.
    limits = {"train": data.num_train, "heldout": data.num_heldout}
    for split in dict.fromkeys(("train", cfg.reference)):
        too_big = [n for n in cfg.batch_sizes if n > limits[split]]
        if too_big:
            raise ConfigError(
                f"batch_sizes={list(cfg.batch_sizes)!r}: {too_big} exceed the {limits[split]} images of "
                f"data={name}'s {split} split"
            )


def load_data(node):
    """Instantiate ``cfg.data``; a set that cannot be read (files missing offline) raises its ConfigError."""
    try:
        return instantiate(node)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise


@hydra.main(version_base="1.3", config_path="../conf", config_name="centroids")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    dataset = hydra_cfg.runtime.choices.get("data", str(cfg.data.get("_target_", "data")))
    try:
        check(cfg)
        data = load_data(cfg.data)
        check_data(data, cfg, dataset)
    except ConfigError as exc:
        exit_or_raise(exc)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    log.info("run folder: %s", run_dir)

    cache: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
    values = centroid_distances(
        data,
        batch_sizes=list(cfg.batch_sizes),
        draws=cfg.draws,
        rng=torch.Generator().manual_seed(cfg.seed),
        seed=cfg.seed,
        reference=cfg.reference,
        n_init=cfg.kmeans.n_init,
        max_iter=cfg.kmeans.max_iter,
        tol=float(cfg.kmeans.tol),
        solver=cfg.solver,
        cache=cache,
        progress=cfg.progress,
    )
    rows = summarise(values)
    capped = sum(it >= cfg.kmeans.max_iter for v in values.values() for it in v[KMEANS_ITER])
    if capped:
        log.warning(
            "%d of %d k-means runs stopped at kmeans.max_iter=%d before converging; raise it",
            capped, len(cfg.batch_sizes) * cfg.draws, cfg.kmeans.max_iter,
        )  # fmt: skip
    table = markdown_table(rows)
    dim = math.prod(data.shape)
    header = (
        f"# k-means centroids against real batches: {dataset} (d = {dim}, {data.num_train} training "
        f"images), {cfg.draws} draws per n, seed {cfg.seed}\n\n"
        f"y: n real {cfg.reference} images; x: n real training images; centroids: k-means with k = n "
        f'on the training split. Mean ± sample sd over draws; "closer": share of draws with '
        f"W(centroids, y) < W(x, y).\n\n"
    )

    n_fig = figure_batch_size(list(cfg.batch_sizes), cfg.figure_images)
    shown = min(n_fig, cfg.figure_images)
    centroids = torch.from_numpy(cache[n_fig, 0][0][:shown]).reshape(shown, *data.shape)
    real = data.sample(shown, torch.Generator().manual_seed(cfg.seed))
    title = f"{dataset}: k-means centroids (k = {n_fig}, draw 0) beside real images; {cfg.draws} draws per n"

    atomic_write_json(
        run_dir / "centroids.json",
        {
            "data": dataset,
            "dim": dim,
            "num_train": data.num_train,
            "seed": cfg.seed,
            "draws": cfg.draws,
            "reference": cfg.reference,
            "kmeans": OmegaConf.to_container(cfg.kmeans),
            "kmeans_capped": capped,
            "figure_batch_size": n_fig,
            "rows": rows,
            "values": {str(n): v for n, v in values.items()},
        },
    )
    atomic_write_bytes(run_dir / "centroids.md", (header + table).encode())
    png = plot_png(centroids, real, rows, pixel_range=data.pixel_range, title=title)
    atomic_write_bytes(run_dir / "centroids.png", png)

    print(header + table, end="")
    print(f"\nrun folder: {run_dir}")
    # The sweep objective: how often the centroids beat a real batch in W1 at the largest batch size.
    return rows[-1]["closer_w1"]


if __name__ == "__main__":
    main()
