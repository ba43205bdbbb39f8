"""The centroid experiment (claim 3): its numbers against a direct computation, and its entry point."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans

from experiments.centroids import (
    CENTROIDS_W1,
    CENTROIDS_W2,
    KMEANS_ITER,
    REAL_W1,
    REAL_W2,
    centroid_distances,
    check,
    check_data,
    figure_batch_size,
    kmeans_seed,
    load_data,
    markdown_table,
    summarise,
)
from gan.config import ConfigError
from gan.data import Digits, MixtureOfGaussians
from tests.conftest import run_module


@pytest.fixture(scope="module")
def digits():
    return Digits()


def assignment_w(a, b, p):
    """W_p of equal-size uniform clouds as an assignment problem, straight from scipy."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    cost = cdist(a, b) ** p
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean() ** (1 / p))


def direct(data, sizes, draws, seed, reference):
    """The documented procedure, written out with sklearn and scipy only."""
    images, _ = data.split("train")
    points = images.reshape(len(images), -1).double().numpy()
    rng = torch.Generator().manual_seed(seed)
    out = {}
    for n in sizes:
        rows = []
        for i in range(draws):
            km = KMeans(n_clusters=n, n_init=1, max_iter=100, tol=1e-4, random_state=kmeans_seed(seed, n, i))
            centroids = km.fit(points).cluster_centers_
            x = data.sample(n, rng)
            y = data.sample_heldout(n, rng) if reference == "heldout" else data.sample(n, rng)
            # Columns: W1(C, y), W1(x, y), W2(C, y), W2(x, y).
            rows.append([assignment_w(a, y, p) for p in (1, 2) for a in (centroids, x)])
        out[n] = np.asarray(rows)
    return out


@pytest.mark.parametrize("reference", ["heldout", "train"])
def test_values_match_a_direct_computation(digits, reference):
    sizes, draws, seed, cache = [3, 10], 3, 7, {}
    got = centroid_distances(
        digits, batch_sizes=sizes, draws=draws, seed=seed, rng=torch.Generator().manual_seed(seed),
        reference=reference, solver="emd", cache=cache,
    )  # fmt: skip
    want = direct(digits, sizes, draws, seed, reference)
    for n in sizes:
        table = np.column_stack([got[n][k] for k in (CENTROIDS_W1, REAL_W1, CENTROIDS_W2, REAL_W2)])
        np.testing.assert_allclose(table, want[n], rtol=1e-9, atol=1e-9)
        assert all(1 <= it <= 100 for it in got[n][KMEANS_ITER])
    assert sorted(cache) == [(n, i) for n in sizes for i in range(draws)]
    assert not np.allclose(cache[10, 0][0], cache[10, 1][0])  # each draw clusters afresh


def test_cached_centroids_are_used_and_new_ones_kept(digits):
    n = 4
    planted = np.zeros((n, 64))  # blank images: W1 to y is then the mean norm of y's images, matched
    cache = {(n, 0): (planted, 1)}
    got = centroid_distances(digits, batch_sizes=[n], draws=2, seed=0, cache=cache)
    rng = torch.Generator().manual_seed(0)
    digits.sample(n, rng)
    y = digits.sample_heldout(n, rng)
    assert got[n][CENTROIDS_W1][0] == pytest.approx(assignment_w(planted, y, 1), rel=1e-12)
    assert cache[n, 0][0] is planted and set(cache) == {(n, 0), (n, 1)}
    assert cache[n, 1][0].shape == (n, 64)
    assert got[n][KMEANS_ITER][0] == 1


def test_summary_rows_and_table_match_numpy():
    values = {
        8: {CENTROIDS_W1: [1.0, 2.0, 3.0], REAL_W1: [1.5, 1.5, 3.5], CENTROIDS_W2: [2.0, 2.0, 2.0],
            REAL_W2: [1.0, 2.0, 3.0], KMEANS_ITER: [3, 4, 5]},
    }  # fmt: skip
    (row,) = summarise(values)
    assert row["n"] == 8 and row["draws"] == 3
    for key in (CENTROIDS_W1, REAL_W1, CENTROIDS_W2, REAL_W2):
        assert row[f"{key}_mean"] == pytest.approx(np.mean(values[8][key]))
        assert row[f"{key}_sd"] == pytest.approx(np.std(values[8][key], ddof=1))
    assert row["closer_w1"] == pytest.approx(2 / 3)  # 1 < 1.5, 2 > 1.5, 3 < 3.5
    assert row["closer_w2"] == pytest.approx(1 / 3)  # a tie (2 = 2) is not closer
    table = markdown_table([row]).splitlines()
    assert len(table) == 3
    assert table[2] == "| 8 | 2 ± 1 | 2.167 ± 1.155 | 67% | 2 ± 0 | 2 ± 1 | 33% |"


def test_figure_batch_size():
    assert figure_batch_size([16, 32, 64, 128], 64) == 64
    assert figure_batch_size([16, 48, 128], 64) == 48
    assert figure_batch_size([128, 256], 64) == 128


GOOD = {
    "seed": 0, "batch_sizes": [8, 16], "draws": 3, "reference": "heldout", "solver": "auto",
    "kmeans": {"n_init": 1, "max_iter": 50, "tol": 1e-4}, "figure_images": 16,
}  # fmt: skip
BAD = [
    ({"draws": 1}, "draws=1: must be an integer >= 2"),
    ({"batch_sizes": [0, 4]}, "batch_sizes=[0, 4]: must be a non-empty list of positive integers"),
    ({"batch_sizes": 4}, "batch_sizes=4: must be a non-empty list of positive integers"),
    ({"reference": "test"}, "reference='test': must be one of heldout, train"),
    ({"kmeans": {"n_init": 0, "max_iter": 50, "tol": 1e-4}}, "kmeans.n_init=0: must be a positive integer"),
    (
        {"kmeans": {"n_init": 1, "max_iter": 5.5, "tol": 1e-4}},
        "kmeans.max_iter=5.5: must be a positive integer",
    ),
    ({"kmeans": {"n_init": 1, "max_iter": 5, "tol": -1.0}}, "kmeans.tol=-1.0: must be a finite number >= 0"),
    ({"solver": "sinkhorn"}, "solver='sinkhorn': must be one of auto, emd, assignment"),
    ({"figure_images": 0}, "figure_images=0: must be a positive integer"),
    ({"seed": -2}, "seed=-2: must be an integer >= 0"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_check_names_the_bad_key(change, message):
    check(OmegaConf.create(GOOD))
    with pytest.raises(ConfigError) as err:
        check(OmegaConf.create(GOOD | change))
    assert str(err.value).startswith(message)


def test_check_data_needs_an_image_set_and_room_for_each_batch(digits):
    cfg = OmegaConf.create(GOOD)
    check_data(digits, cfg, "digits")
    with pytest.raises(ConfigError, match=r"^data=gaussians8: k-means needs an image set"):
        check_data(MixtureOfGaussians("ring", 8, 2.0, 0.02), cfg, "gaussians8")
    big = digits.num_heldout + 1
    with pytest.raises(
        ConfigError, match=rf"\[{big}\] exceed the {digits.num_heldout} images of data=digits's heldout"
    ):
        check_data(digits, OmegaConf.create(GOOD | {"batch_sizes": [8, big]}), "digits")
    check_data(digits, OmegaConf.create(GOOD | {"batch_sizes": [big], "reference": "train"}), "digits")


def test_a_data_set_missing_offline_is_a_bad_config(tmp_path):
    node = {"_target_": "gan.data.TorchvisionImages", "name": "mnist", "channels": 1, "size": 28,
            "root": str(tmp_path), "download": False}  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"^data=mnist: no MNIST files in .*use data=mnist5k or data=digits offline"
    ):
        load_data(OmegaConf.create(node))


def run(*args):
    return run_module("experiments.centroids", *args)


@pytest.mark.slow
def test_entry_point_writes_json_table_and_figure(tmp_path, digits):
    run_dir = tmp_path / "centroids"
    out = run(
        "batch_sizes=[4,8]",
        "draws=2",
        "seed=3",
        "figure_images=4",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads((run_dir / "centroids.json").read_text())
    assert (
        result["data"] == "digits" and result["reference"] == "heldout" and result["figure_batch_size"] == 4
    )
    assert [r["n"] for r in result["rows"]] == [4, 8] and result["kmeans_capped"] == 0
    want = direct(digits, [4, 8], 2, 3, "heldout")
    for n in (4, 8):
        got = np.column_stack(
            [result["values"][str(n)][k] for k in (CENTROIDS_W1, REAL_W1, CENTROIDS_W2, REAL_W2)]
        )
        np.testing.assert_allclose(got, want[n], rtol=1e-9)
    table = (run_dir / "centroids.md").read_text()
    assert table.splitlines()[-1].startswith("| 8 |") and table.splitlines()[-1] in out.stdout
    assert (run_dir / "centroids.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["draws=1"], "error: draws=1: must be an integer >= 2 (a standard deviation needs two)"),
        (
            ["data=gaussians8"],
            "error: data=gaussians8: k-means needs an image set with a training split; "
            "use digits, mnist5k, mnist or cifar10",
        ),
    ],  # fmt: skip
    ids=["config", "data"],
)
def test_bad_input_exits_2_with_one_line_before_computing(tmp_path, args, message):
    out = run(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "run" / "centroids.json").exists()
