"""benchmarks.run --merge: re-measured rows replace their recorded rows, the others stay."""

from __future__ import annotations

from benchmarks.run import merged


def _row(case: str, impl: str, ms: float, date: str) -> dict:
    return {"op": "maxsim", "case": case, "shape": "s", "dtype": "float32", "pass": "fwd", "impl": impl,
            "median_ms": ms, "date": date}


def test_merge_replaces_measured_rows_in_place_and_keeps_the_rest():
    recorded = [_row("a", "kdops", 1.0, "old"), _row("b", "kdops", 2.0, "old"), _row("b", "compile", 3.0, "old")]
    measured = [_row("b", "compile", 4.0, "new"), _row("b", "kdops", 5.0, "new"), _row("b", "peer", 6.0, "new")]
    out = merged(recorded, measured)
    assert [(r["case"], r["impl"], r["median_ms"], r["date"]) for r in out] == [
        ("a", "kdops", 1.0, "old"), ("b", "kdops", 5.0, "new"), ("b", "compile", 4.0, "new"), ("b", "peer", 6.0, "new")]
    # Another dtype or shape is another row.
    other = dict(measured[0], dtype="bfloat16")
    assert merged(recorded, [other]) == recorded + [other]
