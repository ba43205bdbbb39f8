"""Check run folders against the run-folder contract (:mod:`gan.runfolder`).

    python -m scripts.check_run_folder RUN_DIR [RUN_DIR ...]

Exit 0 when every folder holds to it; otherwise one line per problem and exit 1. Besides the files and
keys the contract names, it refuses values no correct run can produce: W1 above W2, a c-transform bound
above W1 (a feasible dual value), negative distances, steps out of order or repeated, non-finite
metrics in a completed run, a ``final`` that is not the last evaluation.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

from gan.runfolder import CHECKPOINT, CONFIG, METRICS, STATUSES, SUMMARY, TB

SUMMARY_KEYS = ("status", "steps_done", "elapsed_s", "final")
OT_KEYS = ("w1_exact", "w2_exact", "w1_real_real")
CRITIC_KEYS = ("critic_estimate", "critic_gap", "critic_rel_error")


def problems(run: str | Path) -> Iterator[str]:
    """Every way the folder ``run`` breaks the run-folder contract, one sentence each."""
    run = Path(run)
    if not (run / CONFIG).is_file():
        yield f"no {CONFIG} (resolved config)"
    summary = None
    try:
        summary = json.loads((run / SUMMARY).read_text())
    except FileNotFoundError:
        yield f"no {SUMMARY}"
    except json.JSONDecodeError as exc:
        yield f"{SUMMARY} is not valid JSON ({exc})"
    if summary is not None:
        yield from (f"{SUMMARY} lacks '{key}'" for key in SUMMARY_KEYS if key not in summary)
        if summary.get("status") not in STATUSES:
            yield f"{SUMMARY} status {summary.get('status')!r} is not one of {', '.join(STATUSES)}"
    rows = []
    try:
        for number, line in enumerate((run / METRICS).read_text().splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                yield f"{METRICS} line {number} is not valid JSON"
    except FileNotFoundError:
        yield f"no {METRICS}"
    completed = (summary or {}).get("status") == "completed"
    yield from _row_problems(rows, completed)
    if completed:
        if not (run / CHECKPOINT).is_file():
            yield f"a completed run without {CHECKPOINT}"
        final_step = (summary.get("final") or {}).get("step")
        if rows and final_step != rows[-1].get("step"):
            yield f"{SUMMARY} final step {final_step} is not the last {METRICS} step {rows[-1].get('step')}"
        if summary.get("final") and rows and summary["final"] != rows[-1]:
            yield f"{SUMMARY} final differs from the last {METRICS} line"
    if not any((run / TB).glob("**/events.out.tfevents*")):
        yield f"no TensorBoard event files under {TB}/"


def _row_problems(rows: list[dict], completed: bool) -> Iterator[str]:
    steps = [row.get("step") for row in rows]
    if any(not isinstance(step, int) or step < 0 for step in steps):
        yield f"a {METRICS} line has no step, or a negative one"
        return
    if steps != sorted(set(steps)):
        yield f"{METRICS} steps are not strictly increasing: {steps}"
    for row in rows:
        at = f"step {row['step']}"
        missing = [key for key in OT_KEYS if key not in row]
        if missing:
            yield f"{at}: missing {', '.join(missing)}"
        critic = [key for key in CRITIC_KEYS if key in row]
        if critic and len(critic) != len(CRITIC_KEYS):
            yield f"{at}: only some critic keys ({', '.join(critic)})"
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value) and completed:
                yield f"{at}: {key} = {value} in a completed run"
        w1, w2 = row.get("w1_exact"), row.get("w2_exact")
        if w1 is not None and w2 is not None and w1 > w2 * (1 + 1e-9) + 1e-12:
            yield f"{at}: w1_exact {w1} > w2_exact {w2}, impossible (W1 <= W2)"
        bound = row.get("ctransform_bound")
        if bound is not None and w1 is not None and bound > w1 + 1e-9 * (1 + abs(w1)):
            yield f"{at}: ctransform_bound {bound} > w1_exact {w1}, impossible (a feasible dual value)"
        if any(row.get(key, 0) < 0 for key in OT_KEYS):
            yield f"{at}: a negative distance"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m scripts.check_run_folder RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    bad = 0
    for arg in argv:
        for problem in problems(arg):
            print(f"{arg}: {problem}")
            bad += 1
    if not bad:
        print(f"ok: {len(argv)} run folder(s) hold to the contract")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
