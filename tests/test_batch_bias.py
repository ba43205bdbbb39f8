"""The minibatch-bias experiment: its numbers against a direct computation, and its entry point."""

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments.batch_bias import (
    REAL_REAL,
    SHIFTED,
    check,
    markdown_table,
    minibatch_bias,
    summarise,
    translation,
)
from gan.config import ConfigError
from gan.data import MixtureOfGaussians
from tests.conftest import run_module


class Normal1D:
    """Standard normal samples on a line: W1 of equal-size samples is the mean gap of the sorted ones."""

    shape = (1,)

    def sample(self, n, generator):
        return torch.randn(n, 1, generator=generator)


def sorted_w1(x, y):
    return float(np.mean(np.abs(np.sort(np.asarray(x).ravel()) - np.sort(np.asarray(y).ravel()))))


def test_translation_has_the_requested_norm_along_the_diagonal():
    m = translation((1, 4, 4), 0.8)
    assert m.shape == (1, 4, 4)
    assert float(m.double().norm()) == pytest.approx(0.8, rel=1e-6)
    assert torch.all(m == m.flatten()[0])


def test_values_match_sorted_samples_in_one_dimension():
    sizes, draws, shift = [5, 17, 40], 3, 0.7
    got = minibatch_bias(
        Normal1D(), batch_sizes=sizes, draws=draws, shift=shift, rng=torch.Generator().manual_seed(4)
    )
    # Redraw the same batches in the documented order and compute W1 from sorted samples.
    rng = torch.Generator().manual_seed(4)
    for n in sizes:
        for i in range(draws):
            x, x_other = Normal1D().sample(n, rng), Normal1D().sample(n, rng)
            assert got[n][REAL_REAL][i] == pytest.approx(sorted_w1(x, x_other), abs=1e-6)
            assert got[n][SHIFTED][i] == pytest.approx(sorted_w1(x, x_other + shift), abs=1e-6)


def test_each_draw_is_within_the_noise_floor_of_the_translation_truth():
    # W1(x', x' + m) = |m| exactly, so by the triangle inequality |W1(x, x' + m) - |m|| <= W1(x, x').
    data = MixtureOfGaussians("ring", 8, 2.0, 0.02)
    got = minibatch_bias(data, batch_sizes=[8, 64], draws=4, shift=0.5, rng=torch.Generator().manual_seed(0))
    for by_kind in got.values():
        for rr, sh in zip(by_kind[REAL_REAL], by_kind[SHIFTED], strict=True):
            assert rr > 0
            assert abs(sh - 0.5) <= rr + 1e-9


def test_summary_rows_and_table_match_numpy():
    values = {
        8: {REAL_REAL: [0.3, 0.5, 0.4], SHIFTED: [1.1, 0.9, 1.3]},
        32: {REAL_REAL: [0.1, 0.2], SHIFTED: [1.0, 1.02]},
    }
    rows = summarise(values, shift=1.0)
    for row, (n, by_kind) in zip(rows, values.items(), strict=True):
        assert row["n"] == n
        for kind, truth in ((REAL_REAL, 0.0), (SHIFTED, 1.0)):
            v = np.asarray(by_kind[kind])
            assert row[f"{kind}_mean"] == pytest.approx(v.mean())
            assert row[f"{kind}_sd"] == pytest.approx(v.std(ddof=1))
            assert row[f"{kind}_bias"] == pytest.approx(v.mean() - truth)
    table = markdown_table(rows, shift=1.0).splitlines()
    assert len(table) == 2 + len(values)
    assert table[2].startswith(f"| 8 | {0.4:.4g} ± {np.std([0.3, 0.5, 0.4], ddof=1):.4g} | {1.1:.4g} ± ")
    assert "+10.00%" in table[2]  # mean 1.1 against the truth 1.0


@pytest.mark.slow
def test_entry_point_writes_json_table_and_plot(tmp_path):
    run_dir, page = tmp_path / "bias", tmp_path / "docs" / "RESULTS.md"
    page.parent.mkdir()
    page.write_text("# Results\n\nhand-written\n")
    out = run_module(
        "experiments.batch_bias", "batch_sizes=[8,32]", "draws=3", "progress=false", "seed=2",
        f"hydra.run.dir={run_dir}", f"results={page}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads((run_dir / "batch_bias.json").read_text())
    assert [r["n"] for r in result["rows"]] == [8, 32]
    assert result["truth"] == {REAL_REAL: 0.0, SHIFTED: 0.5} and result["data"] == "gaussians8"
    assert all(len(v[REAL_REAL]) == 3 for v in result["values"].values())
    # The same numbers straight from the function, with the seed the config names.
    direct = minibatch_bias(
        MixtureOfGaussians("ring", 8, 2.0, 0.02),
        batch_sizes=[8, 32],
        draws=3,
        shift=0.5,
        rng=torch.Generator().manual_seed(2),
    )
    assert result["values"]["32"][SHIFTED] == pytest.approx(direct[32][SHIFTED], rel=1e-12)
    table = (run_dir / "batch_bias.md").read_text()
    assert "| 32 |" in table and table.splitlines()[-1] in out.stdout
    assert (run_dir / "batch_bias.png").read_bytes().startswith(b"\x89PNG")
    assert math.isfinite(result["decay_exponent_real_real"])
    # results=PAGE: the same table in the page's own section, with the command and the figure.
    text = page.read_text()
    assert text.startswith("# Results\n\nhand-written\n") and table.splitlines()[-1] in text
    assert "Written by `python -m experiments.batch_bias 'batch_sizes=[8,32]' draws=3" in text
    assert "](images/batch_bias.png)" in text and (page.parent / "images" / "batch_bias.png").is_file()


GOOD = {"seed": 0, "batch_sizes": [8, 16], "draws": 3, "shift": 0.5, "solver": "auto"}
BAD = [
    ({"draws": 1}, "draws=1: must be an integer >= 2"),
    ({"batch_sizes": [0, 4]}, "batch_sizes=[0, 4]: must be a non-empty list of positive integers"),
    ({"batch_sizes": 4}, "batch_sizes=4: must be a non-empty list of positive integers"),
    ({"shift": -1.0}, "shift=-1.0: must be a finite number >= 0"),
    ({"shift": float("inf")}, "shift=inf: must be a finite number >= 0"),
    ({"solver": "sinkhorn"}, "solver='sinkhorn': must be one of auto, emd, assignment"),
    ({"seed": -2}, "seed=-2: must be an integer >= 0"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_check_names_the_bad_key(change, message):
    check(OmegaConf.create(GOOD))
    with pytest.raises(ConfigError) as err:
        check(OmegaConf.create(GOOD | change))
    assert str(err.value).startswith(message)


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line_before_computing(tmp_path):
    out = run_module("experiments.batch_bias", "draws=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: draws=1: must be an integer >= 2 (a standard deviation needs two)"
    ]
    assert not (tmp_path / "run" / "batch_bias.json").exists()
