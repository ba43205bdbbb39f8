"""The benchmark's pieces on tiny inputs: interleaving, the solver check, the tables. No timings asserted."""

import pytest
import torch

from scripts import bench


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
    threads = [bench.ThreadResult(case, "G 3×16", 2, 2, [0.5, 0.5], [1.0, 1.0])]
    solvers = [bench.bench_solver_case(8, 2, reps=1)]
    pending = bench.DefaultRun("image", None, 0.15, pending_note="later")
    runs = [
        bench.RunResult(
            bench.DefaultRun("toy", (), 0.10), "python -m experiments.train", 10.0, 0.5, 12.0, 900
        ),
        bench.run_default(pending),
    ]
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
    )

    assert report.startswith("# Performance")
    assert "| toy | `python -m experiments.train` | 10.0 | 0.5 | **5.0%** | ≤ 10% | yes | 900 |" in report
    assert "not measured by this command: later" in report
    assert "**0.955** (0.909–1.000)" in report  # framework steps/s ÷ hand-written, pairwise
    assert "0.500 (0.500–0.500)" in report  # the same in CPU time
    assert "**2.00**" in report
    assert "| less | 1 | 0.50 | 25% |" in report
    assert "| imports only |" in report


def test_the_evaluation_breakdown_times_every_variant(one_thread):
    results = bench.bench_evaluation(reps=1, quick=True, log=lambda msg: None)

    assert [r.name for r in results] == [name for name, _ in bench.EVAL_VARIANTS]
    assert all(len(r.seconds) == 1 and r.seconds[0] > 0 for r in results)
    assert bench.evaluation_table(results).count("\n") == 1 + len(results)


def test_write_section_replaces_only_its_own_part(tmp_path):
    page = tmp_path / "PERFORMANCE.md"
    bench.write_section(page, "a", "# first")
    assert page.read_text().count("# first") == 1
    page.write_text(page.read_text() + "\nwritten by hand\n")
    bench.write_section(page, "b", "second")  # a second owner adds its section at the end
    bench.write_section(page, "a", "# first, again")
    text = page.read_text()
    assert "# first, again" in text and "# first\n" not in text
    assert text.index("# first, again") < text.index("written by hand") < text.index("second")
    bench.write_section(page, "b", "second, again")
    assert "second, again" in page.read_text() and "written by hand" in page.read_text()
