"""How biased is the minibatch W1 estimator? Exact W1 between finite batches, against the known truth.

    python -m experiments.batch_bias                                   # 8 Gaussians, n = 16 ... 1024
    python -m experiments.batch_bias data=swissroll draws=30 shift=1.0
    python -m experiments.batch_bias data=digits "batch_sizes=[16,64,256]"
    python -m experiments.batch_bias hydra.run.dir=outputs/my_bias_run
    python -m experiments.batch_bias results=docs/RESULTS.md           # also rewrite its section there

For each batch size ``n`` and each of ``draws`` repetitions, two independent real batches ``x`` and
``x'`` of ``n`` samples are drawn and two exact W1 values computed (:func:`metrics.ot.wasserstein`):

* ``W1(x, x')``: both batches come from the same distribution, so the true W1 is 0;
* ``W1(x, x' + m)``: ``x'`` translated by a vector ``m`` of norm ``shift`` along (1, ..., 1); the
  true W1 between a distribution and its translate is exactly ``|m|`` (the transport moving every
  point by ``m`` costs ``|m|``, and no plan costs less: ``f(x) = <x, m>/|m|`` is a 1-Lipschitz
  potential whose dual value is ``|m|``).

The gap between the mean of each and its truth is the bias a GAN study inherits when it reads a
minibatch W1 as the distance between distributions. Writes ``batch_bias.json`` (every value),
``batch_bias.md`` (mean ± sd per n) and ``batch_bias.png`` into the run folder, and prints the table;
with ``results=PAGE`` also the table, the command and the figure into that page's section.
"""

from __future__ import annotations

import io
import logging
import math
import shlex
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from experiments.app import exit_or_raise
from gan.config import BATCH_BIAS, ConfigError, validate
from gan.runfolder import atomic_write_bytes, atomic_write_json
from metrics.ot import wasserstein

log = logging.getLogger(__name__)

SECTION = "experiments.batch_bias"  # its section of a results page (results=PAGE)
REAL_REAL = "real_real"  # W1(x, x'), truth 0
SHIFTED = "shifted"  # W1(x, x' + m), truth |m|


def translation(shape: tuple[int, ...], norm: float) -> torch.Tensor:
    """The vector ``m`` of the given sample shape with ``|m| = norm``, pointing along (1, ..., 1)."""
    size = math.prod(shape)
    return torch.full(shape, norm / math.sqrt(size), dtype=torch.float32)


def minibatch_bias(
    data,
    *,
    batch_sizes=(16, 64, 256),
    draws: int = 10,
    shift: float = 0.5,
    rng: torch.Generator | None = None,
    solver: str = "auto",
    progress: bool = False,
) -> dict[int, dict[str, list[float]]]:
    """Exact minibatch W1 between independent batches, for each batch size.

    For each ``n`` in ``batch_sizes`` and each draw, in this order: ``x = data.sample(n, rng)``,
    ``x' = data.sample(n, rng)``; then ``W1(x, x')`` (truth 0) and ``W1(x, x' + m)`` (truth ``shift``)
    with ``m = translation(data.shape, shift)``.

    Parameters
    ----------
    data : object with ``shape`` and ``sample(n, generator)``
        A dataset from ``gan.data``.
    batch_sizes : sequence of int
    draws : int
        Repetitions per batch size.
    shift : float
        Norm of the translation, the true W1 of the second pair.
    rng : torch.Generator, optional
        Source of every batch (a fresh generator seeded with 0 when omitted).
    solver : {"auto", "emd", "assignment"}

    Returns
    -------
    dict
        ``{n: {REAL_REAL: [draws values], SHIFTED: [draws values]}}``.
    """
    if rng is None:
        rng = torch.Generator().manual_seed(0)
    m = translation(tuple(data.shape), shift)
    out: dict[int, dict[str, list[float]]] = {}
    bar = tqdm(total=len(batch_sizes) * draws, desc="W1 solves", unit="pair", disable=not progress)
    for n in batch_sizes:
        values: dict[str, list[float]] = {REAL_REAL: [], SHIFTED: []}
        for _ in range(draws):
            x = data.sample(n, rng)
            x_other = data.sample(n, rng)
            values[REAL_REAL].append(wasserstein(x, x_other, p=1, solver=solver))
            values[SHIFTED].append(wasserstein(x, x_other + m.to(x_other), p=1, solver=solver))
            bar.update(1)
        out[int(n)] = values
    bar.close()
    return out


def summarise(values: dict[int, dict[str, list[float]]], shift: float) -> list[dict[str, float]]:
    """Per batch size: mean, sample sd (ddof=1) and bias (mean − truth) of each estimator."""
    rows = []
    for n, by_kind in values.items():
        row: dict[str, float] = {"n": n}
        for kind, truth in ((REAL_REAL, 0.0), (SHIFTED, shift)):
            v = np.asarray(by_kind[kind], dtype=np.float64)
            row[f"{kind}_mean"] = float(v.mean())
            row[f"{kind}_sd"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
            row[f"{kind}_bias"] = float(v.mean()) - truth
        rows.append(row)
    return rows


def decay_exponent(rows: list[dict[str, float]], key: str = f"{REAL_REAL}_mean") -> float:
    """Slope of log(mean) against log(n): the bias falls like n^slope (NaN with fewer than two sizes)."""
    pts = [(r["n"], r[key]) for r in rows if r[key] > 0]
    if len(pts) < 2:
        return math.nan
    n, y = np.log(np.asarray(pts, dtype=np.float64)).T
    return float(np.polyfit(n, y, 1)[0])


def markdown_table(rows: list[dict[str, float]], shift: float) -> str:
    def pm(mean, sd):
        return f"{mean:.4g}" if math.isnan(sd) else f"{mean:.4g} ± {sd:.4g}"

    lines = [
        f"| n | W1(x, x′), truth 0 | W1(x, x′ + m), truth ‖m‖ = {shift:.4g} | bias of W1(x, x′ + m) "
        "| relative bias |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rel = f"{r[f'{SHIFTED}_bias'] / shift:+.2%}" if shift > 0 else "–"
        lines.append(
            f"| {r['n']} | {pm(r[f'{REAL_REAL}_mean'], r[f'{REAL_REAL}_sd'])} "
            f"| {pm(r[f'{SHIFTED}_mean'], r[f'{SHIFTED}_sd'])} | {r[f'{SHIFTED}_bias']:+.4g} | {rel} |"
        )
    return "\n".join(lines) + "\n"


def plot_png(rows: list[dict[str, float]], shift: float, title: str) -> bytes:
    """Left: mean ± sd of both estimators against n, with their truths; right: the bias, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.asarray([r["n"] for r in rows])
    fig, (ax, ax_bias) = plt.subplots(1, 2, figsize=(10.5, 4.0))
    for kind, truth, color, label in (
        (REAL_REAL, 0.0, "tab:gray", "W1(x, x′)"),
        (SHIFTED, shift, "tab:blue", "W1(x, x′ + m)"),
    ):
        mean = np.asarray([r[f"{kind}_mean"] for r in rows])
        sd = np.nan_to_num(np.asarray([r[f"{kind}_sd"] for r in rows]))
        ax.plot(n, mean, "o-", color=color, label=f"{label} (mean ± sd)")
        ax.fill_between(n, mean - sd, mean + sd, color=color, alpha=0.2)
        ax.axhline(truth, color=color, linestyle="--", linewidth=1, label=f"true W1 = {truth:.3g}")
        bias = mean - truth
        keep = bias > 0  # a log axis; a mean below its truth can only come from sampling noise
        ax_bias.plot(n[keep], bias[keep], "o-", color=color, label=f"{label} − truth")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size n")
    ax.set_ylabel("exact minibatch W1")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax_bias.set_xscale("log", base=2)
    ax_bias.set_yscale("log")
    ax_bias.set_xlabel("batch size n")
    ax_bias.set_ylabel("bias (mean − true W1)")
    ax_bias.legend(fontsize=8)
    ax_bias.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_results(page: Path, table: str, png: Path, command: str) -> None:
    """The :data:`SECTION` of ``page``: ``table`` (its title one level down), the command, the machine and
    the figure, copied to ``images/`` beside the page."""
    from scripts.page import figure, machine, write_section

    link = figure(page, "batch_bias", png.read_bytes())
    text = (
        f"Written by `{command}`; rerunning it rewrites this section. Machine: {machine('POT')}."
        f"\n\n#### {table.removeprefix('# ')}\n"
        f"![minibatch W1 against the true W1, by batch size]({link})\n"
    )
    write_section(page, SECTION, text)


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first bad value (:data:`gan.config.BATCH_BIAS`)."""
    validate(cfg, BATCH_BIAS)


@hydra.main(version_base="1.3", config_path="../conf", config_name="batch_bias")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    try:
        check(cfg)
    except ConfigError as exc:
        exit_or_raise(exc)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    log.info("run folder: %s", run_dir)
    data = instantiate(cfg.data)
    dataset = hydra_cfg.runtime.choices.get("data", str(cfg.data.get("_target_", "data")))

    values = minibatch_bias(
        data,
        batch_sizes=list(cfg.batch_sizes),
        draws=cfg.draws,
        shift=float(cfg.shift),
        rng=torch.Generator().manual_seed(cfg.seed),
        solver=cfg.solver,
        progress=cfg.progress,
    )
    rows = summarise(values, float(cfg.shift))
    slope = decay_exponent(rows)
    table = markdown_table(rows, float(cfg.shift))
    dim = math.prod(data.shape)
    header = (
        f"# Minibatch W1 bias: {dataset} (d = {dim}), {cfg.draws} draws per batch size, seed {cfg.seed}\n\n"
        f"m has norm {cfg.shift:g} along (1, ..., 1). Mean ± sample sd over draws. "
        f"W1(x, x′) falls like n^{slope:.2f}.\n\n"
    )
    atomic_write_json(
        run_dir / "batch_bias.json",
        {
            "data": dataset,
            "dim": dim,
            "seed": cfg.seed,
            "draws": cfg.draws,
            "shift": float(cfg.shift),
            "truth": {REAL_REAL: 0.0, SHIFTED: float(cfg.shift)},
            "decay_exponent_real_real": slope,
            "rows": rows,
            "values": {str(n): v for n, v in values.items()},
        },
    )
    atomic_write_bytes(run_dir / "batch_bias.md", (header + table).encode())
    title = f"minibatch W1 against the true W1: {dataset}, {cfg.draws} draws per n"
    atomic_write_bytes(run_dir / "batch_bias.png", plot_png(rows, float(cfg.shift), title))

    if cfg.results:
        command = shlex.join(["python", "-m", "experiments.batch_bias", *hydra_cfg.overrides.task])
        write_results(Path(cfg.results), header + table, run_dir / "batch_bias.png", command)
    print(header + table, end="")
    print(f"\nrun folder: {run_dir}")
    # The sweep objective: the relative bias of the shifted pair at the largest batch size.
    return rows[-1][f"{SHIFTED}_bias"] / cfg.shift if cfg.shift > 0 else rows[-1][f"{REAL_REAL}_mean"]


if __name__ == "__main__":
    main()
