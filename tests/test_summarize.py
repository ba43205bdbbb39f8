"""scripts.summarize on a folder of real runs: completed, diverged, unfinished, failed before training."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gan.trainer import train
from scripts.summarize import fmt_mean_sd, metric_columns, parse_override, read_overrides_yaml, summarize
from tests.conftest import ROOT, compose_train

CRITIC_KEYS = ("critic_estimate", "critic_gap", "critic_rel_error")


_compose = compose_train


def _run(run_dir, overrides, *, train_overrides=()):
    """A real run in ``run_dir`` with the ``.hydra/overrides.yaml`` Hydra would have written."""
    cfg = _compose(*overrides, *train_overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")
    return train(cfg, run_dir)


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # One intra-op thread: on a shared 2-core machine, two threads make these tiny runs many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _make_runs(tmp_path_factory.mktemp("results"))
    finally:
        torch.set_num_threads(threads)


def _make_runs(root):
    sweep = root / "sweep"
    g8 = ["objective=wgan_gp", "data=gaussians8"]
    g25 = ["objective=wgan_gp", "data=gaussians25"]
    _run(sweep / "0", [*g8, "seed=0"])
    _run(sweep / "1", [*g8, "seed=1"])
    (sweep / "1" / "evaluations").mkdir()
    (sweep / "1" / "evaluations" / "fid.json").write_text(json.dumps({"fid": 1.5, "kid": {"mean": 0.25}}))
    (sweep / "1" / "evaluations" / "broken.json").write_text("[1, 2")
    _run(sweep / "2", [*g25, "seed=0"])
    # Diverges at its first loss check; the override that makes it diverge is left out of
    # overrides.yaml so that it groups with the other gaussians25 seeds.
    diverged = _run(sweep / "3", [*g25, "seed=1"], train_overrides=["objective.generator_optimizer.lr=1e30"])
    assert diverged["status"] == "diverged"
    # Still running: no summary.json yet, and the line being appended is half written.
    shutil.copytree(sweep / "2", sweep / "4")
    OmegaConf.save(OmegaConf.create([*g25, "seed=2"]), sweep / "4" / ".hydra" / "overrides.yaml")
    (sweep / "4" / "summary.json").unlink()
    rows = (sweep / "4" / "metrics.jsonl").read_text().splitlines()
    (sweep / "4" / "metrics.jsonl").write_text("\n".join(rows[:2]) + "\n" + rows[2][:25])
    # Stopped by a bad value before training: Hydra made the folder, nothing else was written.
    (sweep / "5" / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([*g8, "seed=5"]), sweep / "5" / ".hydra" / "overrides.yaml")
    # Another entry point's run folder is not a training run.
    (root / "bias" / ".hydra").mkdir(parents=True)
    (root / "bias" / "batch_bias.log").write_text("")
    (root / "bias" / "batch_bias.json").write_text("{}")
    # Launcher state beside the runs is not a run.
    (sweep / ".submitit" / "123").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    # An objective without a critic: the same files without the critic keys, elsewhere in the tree.
    nocritic = root / "other" / "exact"
    shutil.copytree(sweep / "2", nocritic)
    OmegaConf.save(
        OmegaConf.create(["objective=exact_ot", "data=gaussians25", "seed=0"]),
        nocritic / ".hydra" / "overrides.yaml",
    )
    lines = [json.loads(line) for line in (nocritic / "metrics.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in row.items() if k not in CRITIC_KEYS} for row in lines]
    (nocritic / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in strip))
    summary = _summary(nocritic)
    summary["final"] = strip[-1]
    (nocritic / "summary.json").write_text(json.dumps(summary))

    return root, summarize(root)


def _csv(root):
    with (root / "summary.csv").open() as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def test_csv_has_one_row_per_run_with_overrides_status_and_final_metrics(runs):
    root, _ = runs
    rows = _csv(root)
    assert sorted(rows) == ["other/exact", *(f"sweep/{i}" for i in range(6))]
    status = {k: r["status"] for k, r in rows.items()}
    assert status == {
        "other/exact": "completed",
        "sweep/0": "completed",
        "sweep/1": "completed",
        "sweep/2": "completed",
        "sweep/3": "diverged",
        "sweep/4": "unfinished",
        "sweep/5": "unfinished",
    }
    for name in ("sweep/0", "sweep/2", "sweep/3"):
        summary = _summary(root / name)
        assert rows[name]["steps_done"] == str(summary["steps_done"])
        assert float(rows[name]["elapsed_s"]) == summary["elapsed_s"]
        for key, value in summary["final"].items():
            if key != "step":
                assert float(rows[name][key]) == pytest.approx(value, rel=1e-15), (name, key)
    assert rows["sweep/0"]["data"] == "gaussians8" and rows["sweep/0"]["seed"] == "0"
    assert rows["other/exact"]["objective"] == "exact_ot"
    assert all(rows["other/exact"][k] == "" for k in CRITIC_KEYS)
    assert rows["sweep/3"]["error"].startswith("non-finite")
    # The unfinished run: its last complete evaluation, the half-written line ignored.
    last = json.loads((root / "sweep/4/metrics.jsonl").read_text().splitlines()[1])
    assert rows["sweep/4"]["steps_done"] == str(last["step"])
    assert float(rows["sweep/4"]["w1_exact"]) == last["w1_exact"]
    assert rows["sweep/5"]["steps_done"] == "" and rows["sweep/5"]["w1_exact"] == ""
    # evaluations/*.json become columns prefixed with the file's stem; nested keys are dotted.
    assert rows["sweep/1"]["fid.fid"] == "1.5" and rows["sweep/1"]["fid.kid.mean"] == "0.25"
    assert rows["sweep/0"]["fid.fid"] == ""


def _md_rows(root):
    table = [line for line in (root / "summary.md").read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(header, cells, strict=True))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[1:])
    }


def test_markdown_groups_by_overrides_other_than_seed(runs):
    root, _ = runs
    md = _md_rows(root)
    assert set(md) == {
        "data=gaussians25, objective=exact_ot",
        "data=gaussians25, objective=wgan_gp",
        "data=gaussians8, objective=wgan_gp",
    }
    g8 = md["data=gaussians8, objective=wgan_gp"]
    assert (g8["runs"], g8["not completed"], g8["seeds"]) == ("3", "1", "0, 1, 5")
    finals = [_summary(root / f"sweep/{i}")["final"] for i in (0, 1)]
    for key in ("w1_exact", "critic_estimate", "critic_rel_error", "w1_large", "high_quality_frac"):
        values = np.array([f[key] for f in finals])
        assert g8[key] == f"{values.mean():.4g} ± {values.std(ddof=1):.4g}", key
        assert g8[key] == fmt_mean_sd(values.mean(), values.std(ddof=1))
    assert g8["fid.fid"] == "1.5 (1)"  # only one of the two completed runs has it

    g25 = md["data=gaussians25, objective=wgan_gp"]
    assert (g25["runs"], g25["not completed"], g25["seeds"]) == ("3", "2", "0, 1, 2")
    only = _summary(root / "sweep/2")["final"]
    assert g25["w1_exact"] == f"{only['w1_exact']:.4g}"  # one completed run: its value alone

    exact = md["data=gaussians25, objective=exact_ot"]
    assert exact["critic_rel_error"] == "–" and exact["w1_exact"] == g25["w1_exact"]
    text = (root / "summary.md").read_text()
    assert "7 run(s): 4 completed, 1 diverged, 2 unfinished." in text
    assert "Overrides shared by every run" not in text  # every override varies here
    assert "- `sweep/3`: diverged at step" in text


def test_it_says_what_it_skipped_and_why(runs):
    _, result = runs
    notes = "\n".join(result["skipped"])
    assert "sweep/4: no summary.json (still running, or stopped before writing it); 2 evaluation(s)" in notes
    assert "sweep/5: no summary.json" in notes and "no evaluations yet" in notes
    assert "sweep/3: diverged at step" in notes and "left out of the means" in notes
    assert "other/exact: no final critic_rel_error; not in quality_vs_critic_error.png" in notes
    assert "sweep/1: evaluations/broken.json skipped" in notes
    assert "bias: not a training run (its log is batch_bias.log); not summarised" in notes
    assert not any(".submitit" in n or "multirun" in n for n in result["skipped"])


def test_plots_are_written_atomically(runs):
    root, result = runs
    for name in ("curves.png", "quality_vs_critic_error.png"):
        assert (root / name).read_bytes().startswith(b"\x89PNG")
    assert {p.name for p in result["written"]} == {
        "summary.csv",
        "summary.md",
        "curves.png",
        "quality_vs_critic_error.png",
    }
    assert not list(root.glob(".*.tmp"))


def test_command_line_is_repeatable_and_reports_skips(runs):
    root, _ = runs
    before = (root / "summary.csv").read_text()
    out = subprocess.run(
        [sys.executable, "-m", "scripts.summarize", str(root)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"7 run(s) below {root}: 4 completed, 1 diverged, 2 unfinished")
    assert "skipped: sweep/4: no summary.json" in out.stdout
    assert f"wrote {root / 'summary.md'}" in out.stdout
    assert (root / "summary.csv").read_text() == before  # its own outputs are not read as runs


def test_command_line_errors(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "scripts.summarize", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 1 and "no run folders below" in out.stdout
    assert not (tmp_path / "summary.csv").exists()
    out = subprocess.run(
        [sys.executable, "-m", "scripts.summarize", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and out.stderr.strip() == f"error: {tmp_path / 'nope'} is not a folder"


def test_overrides_yaml_as_hydra_writes_it(tmp_path):
    overrides = [
        "seed=0",
        "+note=a: b",
        "+q='x y'",
        "+long=" + "word " * 40,
        "data.root=/a/b",
        "~foo",
        "+x=[1,2]",
        "+z='it''s'",
        "+e=",
    ]
    OmegaConf.save(OmegaConf.create(overrides), tmp_path / "overrides.yaml")
    assert read_overrides_yaml(tmp_path / "overrides.yaml") == overrides
    assert parse_override("+note=a: b") == ("note", "a: b")
    assert parse_override("++a.b=3") == ("a.b", "3")
    assert parse_override("~foo") == ("foo", "~")


def test_metric_columns_put_image_quality_after_the_toy_keys_and_unknown_keys_last():
    keys = {"zeta", "sharpness", "fid", "w1_exact", "precision", "w1_large", "critic_rel_error"}
    assert metric_columns(keys) == [
        "w1_exact", "critic_rel_error", "w1_large", "fid", "precision", "sharpness", "zeta",
    ]  # fmt: skip


def test_results_page_section_from_a_sweep(runs, tmp_path):
    from scripts.summarize import main

    root, _ = runs
    sweep = tmp_path / "sweep"
    shutil.copytree(root / "sweep", sweep)
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: ['data=gaussians8,gaussians25', 'seed=0,1']\n"
        "  job:\n    name: train\n"
    )
    page = tmp_path / "docs" / "RESULTS.md"
    page.parent.mkdir()
    page.write_text("# Results\n\nhand-written\n")
    argv = [str(sweep), "--results", str(page), "--section", "toy", "--keys", "w1_exact,critic_estimate"]
    assert main(argv) == 0 and main(argv) == 0  # twice: the section is rewritten, not repeated
    text = page.read_text()
    assert (
        text.startswith("# Results\n\nhand-written\n") and text.count("<!-- begin scripts.summarize toy") == 1
    )
    assert (
        "from the runs of `python -m experiments.train --multirun data=gaussians8,gaussians25 seed=0,1`"
        in text
    )
    assert "| group | runs | not completed | seeds | w1_exact | critic_estimate |" in text
    finals = [_summary(sweep / name)["final"]["w1_exact"] for name in ("0", "1")]  # the gaussians8 seeds
    mean, sd = float(np.mean(finals)), float(np.std(finals, ddof=1))
    assert f"| data=gaussians8 | 3 | 1 | 0, 1, 5 | {fmt_mean_sd(mean, sd)} |" in text
    assert (page.parent / "images" / "toy_curves.png").is_file() and "](images/toy_curves.png)" in text
    assert main([*argv, "--no-curves"]) == 0 and "](images/toy_curves.png)" not in page.read_text()
    assert main([str(sweep), "--results", str(page)]) == 2  # --section missing
