"""The benchmark's pieces on tiny inputs: interleaving, the solver check, the tables. No timings asserted."""

import json

import pytest
import torch

from scripts import bench

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda)")


def test_interleaved_rotates_the_order_and_drops_the_warmup():
    calls = []
    sides = {name: (lambda name=name: calls.append(name) or float(len(calls))) for name in "abc"}
    out = bench.interleaved(sides, reps=2, warmup=1)

    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: len(values) for name, values in out.items()} == {"a": 2, "b": 2, "c": 2}
    assert out["a"] == [6.0, 8.0]  # the warm-up round's call (1.0) is not counted


def test_median_ratio_is_pairwise():
    assert bench.median_ratio([2.0, 3.0, 10.0], [1.0, 1.0, 2.0]) == (3.0, 2.0, 5.0)
    with pytest.raises(ValueError):
        bench.median_ratio([1.0], [1.0, 2.0])


def test_values_agree_flags_a_disagreement():
    assert bench.values_agree({"emd": 1.0, "assignment": 1.0 + 1e-12})[0]
    ok, gap = bench.values_agree({"emd": 1.0, "assignment": 1.0 + 1e-6, "auto": 1.0})
    assert not ok and gap == pytest.approx(1e-6, rel=1e-3)


def test_markdown_table_checks_its_rows():
    table = bench.markdown_table(["a", "b"], [[1, "x"], [2, "y"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]
    with pytest.raises(ValueError):
        bench.markdown_table(["a", "b"], [[1]])


@pytest.mark.parametrize("d", [2, 20])
def test_solver_case_times_every_solver_and_checks_the_values(d):
    result = bench.bench_solver_case(12, d, reps=2)

    assert set(result.seconds) == {"emd", "assignment", "auto"}
    assert all(len(times) == 2 for times in result.seconds.values()) and len(result.cost_s) == 2
    assert result.agree[0], result.values
    assert result.auto_picks == ("emd" if d == 2 else "assignment")
    assert result.fastest in ("emd", "assignment")
    table = bench.solver_table([result])
    assert table.count("\n") == 2 and "| 12 | " in table
    assert "cases" in bench.solver_summary([result])


def _tiny_case():
    return bench.TrainCase("tiny", (), steps=2, quick_steps=2)


@pytest.fixture
def one_thread():
    # Tiny models on a busy machine: a second thread only adds waiting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_both_training_loops_run_and_the_framework_is_evaluated_twice(one_thread):
    cfg = bench.case_config(_tiny_case(), quick=True)
    assert cfg.eval.every > cfg.train.steps

    loop, train_s = bench.framework_loop_seconds(cfg)
    assert 0 < loop.wall < train_s and loop.cpu > 0
    hand = bench.handwritten_loop_seconds(cfg)
    assert hand.wall > 0 and hand.cpu > 0


def test_the_report_renders_with_a_pending_run():
    case = _tiny_case()
    t = bench.Timing
    training = [
        bench.TrainResult(case, "G 3×16", 2, [t(1.0, 2.0), t(1.1, 2.0)], [t(1.0, 1.0)] * 2, [0.1] * 2)
    ]
    image = bench.TrainCase("tiny image", ("train.batch_size=8",), steps=1, image=True)
    image_training = [bench.TrainResult(image, "G width 4", 1, [t(2.0, 2.0)], [t(1.9, 1.9)], [0.1], 0.0)]
    threads = [bench.ThreadResult(case, "G 3×16", 2, 2, [0.5, 0.5], [1.0, 1.0])]
    solvers = [bench.bench_solver_case(8, 2, reps=1)]
    pending = bench.DefaultRun("image", None, 0.15, pending_note="later")
    runs = [
        bench.RunResult(
            bench.DefaultRun("toy", (), 0.10), "python -m experiments.train", 10.0, 0.5, 12.0, 900
        ),
        bench.run_default(pending),
    ]
    presets = [
        bench.PresetResult("claim_a", ("seed=0",), 2000, 500, 40, 10, command="python -m x", elapsed_s=20.0,
                           eval_s=10.0, max_rss_mib=1000),
        bench.PresetResult("claim_b", ("seed=0",), 2000, 500, 40, 10, same_as="claim_a", elapsed_s=20.0,
                           eval_s=10.0),
        bench.PresetResult("claim_c", (), 20000, 1000, 40, 2, pending="a download"),
    ]  # fmt: skip
    report = bench.render_report(
        machine=bench.machine_info(),
        date="today",
        command=bench.COMMAND,
        duration_s=60.0,
        load=(1.0, 1.0),
        training=training,
        threads=threads,
        solvers=solvers,
        evaluation=[bench.EvalResult("as configured", {}, [2.0]), bench.EvalResult("less", {}, [0.5])],
        runs=runs,
        imports_mib=800,
        image_training=image_training,
        presets=presets,
    )

    assert report.startswith("# Performance")
    assert "| toy | `python -m experiments.train` | 10.0 | 0.5 | **5.0%** | ≤ 10% | yes | 900 |" in report
    assert "not measured by this command: later" in report
    assert "**0.955** (0.909–1.000)" in report  # framework steps/s ÷ hand-written, pairwise
    assert "0.500 (0.500–0.500)" in report  # the same in CPU time
    assert "**2.00**" in report
    assert "| less | 1 | 0.50 | 25% |" in report
    assert "| imports only |" in report
    assert "**0.950** (0.950–0.950) | yes |" in report and "0 (bit-identical) |" in report
    # 10 s of evaluation in 20 s; the training half is 50 times longer at the preset's length
    assert "| 50.0% | **2.0%** | ≤ 10% | yes |" in report
    assert "the job of `claim_a`, measured once" in report
    assert "**not measured: a download**" in report
    figures = bench.cpu_figures(
        training=training, image_training=image_training, runs=runs, presets=presets, solvers=solvers
    )
    met = {f["figure"]: f["met"] for f in figures}
    assert met["framework ÷ hand-written steps/s, tiny image: G width 4"] is True
    assert met["evaluation's share, image"] is None  # not measured by this command
    assert [f["met"] for f in figures if "claim_" in f["figure"]] == [True, True, None]


def test_the_evaluation_breakdown_times_every_variant(one_thread):
    results = bench.bench_evaluation(reps=1, quick=True, log=lambda msg: None)

    assert [r.name for r in results] == [name for name, _ in bench.EVAL_VARIANTS]
    assert all(len(r.seconds) == 1 and r.seconds[0] > 0 for r in results)
    assert bench.evaluation_table(results).count("\n") == 1 + len(results)


def test_max_state_difference():
    a = {"w": torch.zeros(2), "b": torch.ones(1)}
    assert bench.max_state_difference(a, {k: v.clone() for k, v in a.items()}) == 0
    assert bench.max_state_difference(a, {"w": torch.tensor([0.0, 0.5]), "b": torch.ones(1)}) == 0.5
    assert bench.max_state_difference(a, {"w": torch.zeros(3), "b": torch.ones(1)}) == float("inf")
    assert bench.max_state_difference(a, {"w": torch.zeros(2)}) == float("inf")


# A DCGAN small enough for a test: 2 generator steps of batch 8 at width 4.
TINY_DCGAN = bench.TrainCase(
    "tiny DCGAN",
    ("data=mnist5k", "model=dcgan", "model.generator.width=4", "model.critic.width=4", "train.batch_size=8"),
    steps=2,
    image=True,
)
TINY_IMAGE_MLP = bench.TrainCase(
    "tiny image MLP",
    ("data=mnist5k", "model=mlp", "model.generator.width=8", "model.critic.width=8", "train.batch_size=8"),
    steps=2,
    image=True,
)


def test_the_hand_written_image_loop_does_the_frameworks_work_exactly(one_thread):
    results = bench.bench_training([TINY_DCGAN, TINY_IMAGE_MLP], reps=1, quick=False, log=lambda msg: None)

    for result in results:
        assert result.max_diff == 0  # final parameters and buffers, framework against hand-written
        assert len(result.framework) == len(result.handwritten) == 1
    assert "0 (bit-identical)" in bench.training_table(results, image=True)
    cfg = bench.case_config(TINY_DCGAN, quick=False)
    moved = bench.handwritten_image_loop(cfg, bench.HandOptions(pool="float"))
    plain = bench.handwritten_image_loop(cfg)
    assert bench.max_state_difference(moved.states["generator"], plain.states["generator"]) == 0


def test_the_variants_and_the_profiles_of_the_image_loop(one_thread):
    variants = bench.bench_variants([(TINY_DCGAN, 1)], reps=1, quick=False, log=lambda msg: None)
    assert [v.name for v in variants] == [name for name, _ in bench.VARIANTS]
    assert variants[0].max_diff == 0 and variants[1].max_diff == 0  # plain; floats gathered: same numbers
    assert bench.variants_table(variants).count("\n") == 1 + len(variants)

    profile = bench.profile_image_step(TINY_DCGAN, 1, quick=False)
    assert [name for name, _ in profile.phases] == list(bench.PHASES)
    assert profile.ops and 0 < profile.groups["convolutions (forward, backward, double backward)"] <= 1
    assert "aten::convolution_backward" in bench.profile_table([profile])

    comparison = bench.profile_framework(TINY_IMAGE_MLP, quick=False, steps=1)
    assert comparison.rows and all(name not in bench.PHASES for name, *_ in comparison.rows)
    assert comparison.totals[0] > 0 and comparison.totals[1] > 0
    assert "framework calls/step" in bench.comparison_table([comparison])


@pytest.mark.parametrize(
    "steps, every", [(2000, 500), (500, 125), (500, 250), (20000, 1000), (700, 300), (30, 10)]
)
def test_compressed_schedule_keeps_every_evaluation(steps, every):
    def evaluations(steps, every):  # the index of each evaluation, as the loop numbers them
        return [s // every for s in range(steps + 1) if s % every == 0 or s == steps]

    short_steps, short_every = bench.compressed_schedule(steps, every, target=40)
    assert evaluations(short_steps, short_every) == evaluations(steps, every)
    assert short_steps == steps or 20 <= short_steps <= 80


def test_preset_eval_share_scales_the_training_time_back_up():
    assert bench.preset_eval_share(10.0, 20.0, 1) == 0.5
    assert bench.preset_eval_share(10.0, 20.0, 9) == pytest.approx(0.1)


def test_first_job_of_a_sweep():
    params = {"objective": "wgan_gp,exact_ot", "seed": "0,1,2", "objective.critic_steps": "20,5,1", "x": "7"}
    assert bench.first_job(params) == ("objective=wgan_gp", "seed=0", "objective.critic_steps=20", "x=7")
    assert bench.first_job(None) == ()


def test_every_image_preset_is_planned():
    names = bench.image_presets()
    if not names:
        pytest.skip(f"no conf/experiment/{bench.PRESET_GLOB}")
    plans = [bench.plan_preset(name) for name in names]
    for plan in plans:
        assert plan.short_steps <= plan.steps and plan.factor >= 1
        assert plan.pending == "" or "download" in plan.pending
    assert any(not plan.pending for plan in plans)


def test_cuda_is_refused_on_a_machine_without_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    page = tmp_path / "PERFORMANCE.md"

    assert bench.main(["--device", "cuda", "--out", str(page)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda: CUDA is not available")
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing run


@pytest.fixture
def tiny_accelerator_bench(monkeypatch):
    """The GPU command's lists cut to one tiny toy case, one tiny image case and the toy MLP."""
    monkeypatch.setattr(bench, "TRAIN_CASES", [_tiny_case()])
    monkeypatch.setattr(bench, "IMAGE_CASES", [TINY_IMAGE_MLP])
    monkeypatch.setattr(bench, "PARALLEL_MODELS", (("toy MLP", ()),))
    monkeypatch.setattr(bench, "QUICK_PARALLEL_KS", (2,))


def test_the_gpu_bench_runs_its_code_path_on_the_cpu(one_thread, tiny_accelerator_bench):
    result = bench.bench_accelerator("cpu", quick=True, reps=1, log=lambda msg: None)

    assert [r.case.name for r in result.training] == ["tiny", "tiny image MLP"]
    assert result.training[1].max_diff == 0
    ((model, rows),) = result.parallel
    assert [r.k for r in rows] == [2] and rows[0].in_turn == "once"
    text = bench.render_device_section(result, date="today")
    assert "Not measured" not in text and "K × one run" in text
    assert [f["met"] is not None for f in bench.device_figures(result)] == [True, True]


def test_gpu_section_says_not_measured_and_the_summary_lists_every_target(tmp_path):
    page = tmp_path / "PERFORMANCE.md"
    cpu = {
        "command": "bench",
        "date": "today",
        "figures": [bench._figure("ratio", 0.9, "0.900", "≥ 0.95", False)],
    }
    bench.publish(page, bench.SECTION, "# Performance", cpu,
                  device_placeholder=bench.render_device_section(None, date="today"))  # fmt: skip

    text = page.read_text()
    assert "**Not measured: no accelerator was available.**" in text
    assert text.index("# Performance") < text.index("Not measured") < text.index("## Targets")
    assert "| ratio | **0.900** | ≥ 0.95 | **no** | `bench` | today |" in text
    gpu_rows = [line for line in text.splitlines() if "on a GPU" in line and "not measured" in line]
    assert len(gpu_rows) == len(bench.TRAIN_CASES) + len(bench.IMAGE_CASES)
    store = json.loads(bench.figures_path(page).read_text())
    assert store[bench.DEVICE_SECTION]["measured"] is False

    # A measured GPU section stays when the CPU bench runs again without a GPU.
    gpu = {"command": "gpu", "date": "later", "measured": True,
           "figures": [bench._figure("on a GPU", 1.0, "1.000", "≥ 0.95", True)]}  # fmt: skip
    bench.publish(page, bench.DEVICE_SECTION, "GPU figures", gpu)
    bench.publish(page, bench.SECTION, "# Performance, again", cpu,
                  device_placeholder=bench.render_device_section(None, date="today"))  # fmt: skip
    text = page.read_text()
    assert "GPU figures" in text and "Not measured" not in text
    assert "1 of the 2 measured figures meet their target" in text
    assert text.rstrip().endswith("<!-- end scripts.bench summary -->")


@needs_cuda
def test_the_gpu_bench_writes_its_section(one_thread, tiny_accelerator_bench, tmp_path):
    page = tmp_path / "PERFORMANCE.md"
    assert bench.main(["--device", "cuda", "--quick", "--out", str(page)]) == 0
    text = page.read_text()
    assert "## On a GPU" in text and "Not measured" not in text
    store = json.loads(bench.figures_path(page).read_text())
    assert store[bench.DEVICE_SECTION]["measured"] is True


@needs_cuda
def test_the_clock_waits_for_the_gpu():
    clock = bench.EvaluationClock("cuda")
    x = torch.randn(512, 512, device="cuda")
    clock("eval_end", 0)
    for _ in range(10):
        x = x @ x
    clock("eval_start", 10)
    assert clock.between_first_two().wall > 0
