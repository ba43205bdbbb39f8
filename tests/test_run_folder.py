"""The run-folder contract check: a real run holds to it, and each kind of broken folder is named."""

import json
import shutil

import pytest

from gan.runfolder import atomic_write_json
from gan.trainer import train
from scripts.check_run_folder import main, problems
from tests.conftest import compose_train
from tests.test_train import _write_hydra_config


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("good") / "run"
    cfg = compose_train("objective=ctransform")  # every critic key, ctransform_bound included
    _write_hydra_config(cfg, run_dir)
    train(cfg, run_dir)
    return run_dir


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _write_rows(run_dir, rows):
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_a_completed_run_holds_to_the_contract(good_run, capsys):
    assert list(problems(good_run)) == []
    assert main([str(good_run)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 run folder(s)")


def _w1_above_w2(d):
    rows = _rows(d)
    rows[1]["w1_exact"] = rows[1]["w2_exact"] + 0.5
    _write_rows(d, rows)


def _bound_above_w1(d):
    rows = _rows(d)
    rows[0]["ctransform_bound"] = rows[0]["w1_exact"] + 1e-3
    _write_rows(d, rows)


def _steps_out_of_order(d):
    rows = _rows(d)
    _write_rows(d, [rows[1], rows[0], *rows[2:]])


def _repeated_step(d):
    rows = _rows(d)
    _write_rows(d, [rows[0], rows[0], *rows[1:]])


def _nan_in_completed(d):
    rows = _rows(d)
    rows[-1]["critic_gap"] = float("nan")
    _write_rows(d, rows)


def _some_critic_keys(d):
    rows = _rows(d)
    del rows[0]["critic_rel_error"]
    _write_rows(d, rows)


def _final_not_last(d):
    summary = _summary(d)
    summary["final"] = _rows(d)[0]
    atomic_write_json(d / "summary.json", summary)


def _bad_status(d):
    atomic_write_json(d / "summary.json", _summary(d) | {"status": "done"})


BROKEN = {
    "> w2_exact": _w1_above_w2,
    "> w1_exact": _bound_above_w1,
    "not strictly increasing": _steps_out_of_order,
    "not strictly increasing ": _repeated_step,
    "critic_gap = nan in a completed run": _nan_in_completed,
    "only some critic keys": _some_critic_keys,
    "final step": _final_not_last,
    "status 'done' is not one of": _bad_status,
    "no summary.json": lambda d: (d / "summary.json").unlink(),
    "no metrics.jsonl": lambda d: (d / "metrics.jsonl").unlink(),
    "no .hydra/config.yaml": lambda d: (d / ".hydra" / "config.yaml").unlink(),
    "without checkpoints/last.pt": lambda d: (d / "checkpoints" / "last.pt").unlink(),
    "no TensorBoard event files": lambda d: shutil.rmtree(d / "tb"),
    "summary.json is not valid JSON": lambda d: (d / "summary.json").write_text("{"),
    "metrics.jsonl line 2 is not valid JSON": lambda d: (d / "metrics.jsonl").write_text('{"step": 0}\n{"st'),
}


@pytest.mark.parametrize("expected", list(BROKEN), ids=str.strip)
def test_each_broken_folder_is_named(good_run, tmp_path, capsys, expected):
    run_dir = tmp_path / "run"
    shutil.copytree(good_run, run_dir)
    BROKEN[expected](run_dir)
    found = list(problems(run_dir))
    assert any(expected.strip() in problem for problem in found), found
    assert main([str(run_dir)]) == 1
    assert expected.strip() in capsys.readouterr().out
