"""A run as TensorBoard's own server shows it: run names, dense curves, charts of written tags, HParams.

The server is the real one (``python -m tensorboard.main``) on a free local port, read through the HTTP
API its dashboards use; it is stopped by its process id.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from gan.runlog import COMPARE_TAG
from tests.conftest import TINY, compose_train, run_module

DENSE = ("ot/w1_exact", "ot/w1_real_real", "critic/estimate", "critic/gap", "critic/rel_error")
STEPS = 40  # with eval.curve_every=1: 41 points, as the default run has with its defaults (below)


def test_the_default_run_has_at_least_40_points_per_dense_curve():
    cfg = compose_train(tiny=())
    assert cfg.train.steps // cfg.eval.curve_every + 1 >= 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, logdir):
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(self.port), "--reload_interval", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def get(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait_for(self, predicate, timeout=180):
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                if predicate():
                    return
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "TensorBoard did not show the run in time"
            time.sleep(0.5)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tb") / "0_objective=wgan_gp,seed=0"
    overrides = [f"train.steps={STEPS}", "eval.every=20", "eval.curve_every=1", f"hydra.run.dir='{run_dir}'"]
    out = run_module("experiments.train", *TINY, *overrides)
    assert out.returncode == 0, out.stderr
    server = Server(run_dir)
    try:
        main = f"tb/{run_dir.name}"

        def loaded():  # the run, its three series, and every point of the last one written
            tags = server.get("/data/plugin/scalars/tags")
            last = f"/data/plugin/scalars/scalars?run={main}/w1_real_real&tag={COMPARE_TAG}"
            return len(tags) == 4 and len(server.get(last)) == STEPS + 1

        server.wait_for(loaded)
        yield server, run_dir
    finally:
        server.stop()


def test_runs_are_named_after_the_run_folder(served):
    server, run_dir = served
    runs = server.get("/data/runs")
    main = f"tb/{run_dir.name}"
    series = [f"{main}/{key}" for key in ("critic_estimate", "w1_exact", "w1_real_real")]
    assert sorted(runs) == sorted([main, *series])
    assert "tb" not in runs


def test_dense_curves_have_a_point_per_curve_step(served):
    server, run_dir = served
    main = f"tb/{run_dir.name}"
    for tag in DENSE:
        points = server.get(f"/data/plugin/scalars/scalars?run={main}&tag={tag}")
        assert [p[1] for p in points] == list(range(STEPS + 1)), tag
    curves = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curves] == list(range(STEPS + 1))
    w1 = server.get(f"/data/plugin/scalars/scalars?run={main}&tag=ot/w1_exact")
    assert [p[2] for p in w1] == pytest.approx([c["w1_exact"] for c in curves], rel=1e-6)


def test_the_compared_series_are_three_runs_of_one_tag(served):
    server, run_dir = served
    tags = server.get("/data/plugin/scalars/tags")
    series = [run for run, run_tags in tags.items() if COMPARE_TAG in run_tags]
    assert sorted(run.rsplit("/", 1)[1] for run in series) == ["critic_estimate", "w1_exact", "w1_real_real"]
    for run in series:
        assert len(server.get(f"/data/plugin/scalars/scalars?run={run}&tag={COMPARE_TAG}")) == STEPS + 1


def test_every_custom_scalars_chart_shows_tags_the_run_writes(served):
    server, _ = served
    written = {tag for run_tags in server.get("/data/plugin/scalars/tags").values() for tag in run_tags}
    layout = server.get("/data/plugin/custom_scalars/layout")
    charts = [chart for category in layout["category"] for chart in category["chart"]]
    assert charts
    for chart in charts:
        tags = chart.get("multiline", {}).get("tag") or [
            s[k] for s in chart.get("margin", {}).get("series", []) for k in ("value", "lower", "upper")
        ]
        assert tags and set(tags) <= written, chart["title"]
    titles = [chart["title"] for chart in charts]
    assert not any("FID" in t or "precision" in t for t in titles)  # toy data: no image-quality charts


def test_hparams_name_the_objective_data_model_and_preset_first(served):
    server, _ = served
    experiment = server.get("/data/plugin/hparams/experiment", {"experimentName": ""})
    names = [h["name"] for h in experiment["hparamInfos"]]
    assert names[:4] == ["data", "experiment", "model", "objective"]
    types = {h["name"]: h["type"] for h in experiment["hparamInfos"]}
    assert types["resume"] == "DATA_TYPE_BOOL" and types["objective"] == "DATA_TYPE_STRING"
    groups = server.get(
        "/data/plugin/hparams/session_groups",
        {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING",
         "STATUS_UNKNOWN"], "colParams": [], "startIndex": 0, "sliceSize": 10},
    )  # fmt: skip
    hparams = groups["sessionGroups"][0]["hparams"]
    assert hparams["objective"] == "wgan_gp" and hparams["data"] == "gaussians8"
    assert hparams["experiment"] == "null" and hparams["eval.classifier_dir"] == "null"


def test_the_server_is_gone_after_stop(tmp_path):
    server = Server(tmp_path)
    server.wait_for(lambda: server.get("/data/plugins_listing") is not None)
    server.stop()
    assert server.proc.returncode is not None
    with pytest.raises(OSError):
        server.get("/data/runs")
