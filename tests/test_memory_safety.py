"""Memory safety of the raw ops: every index an op dereferences (MaxSim's saved argmax, a
ranking, Margin-MSE's saved count, doc_offsets, lengths, target), given at and past each bound
or taken from another call. Each call must raise a Python exception naming the argument, or
return the oracle's result (tests/raw_calls.py); never crash. The calls run in one separate
process per device (tests/fuzz_raw_worker.py), so a crash fails these tests instead of the run.

On CUDA (and the CUDA kernels run on the simulator) a bad argmax cannot raise without a device
sync: the kernels skip it, and the oracle then skips it too. Nor do the CUDA backward ops
re-check what their forward made: a saved ranking that is not a permutation gives outputs of
the right shapes with unspecified values (every entry is clamped into the row), and a saved
count only scales 'mean' (tests/raw_calls.py: skip_bad_indices)."""

from __future__ import annotations

import functools

import pytest

from tests.helpers import DEVICES
from tests.test_fuzz_raw_ops import run_batch


def _case(op, mutations, raises, seed=1, size=7):
    return {"op": op, "seed": seed, "size": size, "dtype": "float64", "mutations": mutations, "all_meta": False}, raises


# ["index", selector, position, value] picks the selector-th index argument present (in the order
# argmax, ranking, count, doc_offsets, lengths, target) and sets one element to the value.
ARGMAX_SIZES = {"all pairs": 9, "per query": 10, "packed": 11}  # size % 3 picks the layout
CASES = {}
for layout, size in ARGMAX_SIZES.items():
    for value in ("bound", "bound+1", "big", "int32max", "-2", "int32min"):
        CASES[f"maxsim_backward argmax={value} ({layout})"] = _case("maxsim_backward", [["index", 0, 5, value]], "argmax", size=size)
    if layout != "packed":  # (packed docs differ in length: the bound is the longest's)
        CASES[f"maxsim_backward argmax=last token ({layout})"] = _case("maxsim_backward", [["index", 0, 5, "bound-1"]], None, size=size)
    CASES[f"maxsim_backward argmax=-1 ({layout})"] = _case("maxsim_backward", [["index", 0, 5, "-1"]], None, size=size)
    CASES[f"maxsim_backward argmax of another call ({layout})"] = _case("maxsim_backward", [["swap", 1, 5, size + 3]], "argmax", size=size)
    CASES[f"maxsim_backward D of another call ({layout})"] = _case("maxsim_backward", [["swap", 3, 5, size + 3]], "", size=size)

RANKING_POSITION = {"plackett_luce_loss": 1, "plackett_luce_loss_backward": 2, "pld_loss_backward": 3}
for op, position in RANKING_POSITION.items():
    whole_rows = [["none", 1]] if op.startswith("plackett") else []  # lengths=None: no padding to hide in
    for value in ("bound", "bound+1", "-1", "big", "int32min"):
        CASES[f"{op} ranking={value}"] = _case(op, whole_rows + [["index", 0, 3, value]], "ranking", size=11)
    CASES[f"{op} ranking with a duplicate"] = _case(op, whole_rows + [["duplicate", 0, 0]], "ranking", size=11)
    CASES[f"{op} ranking of another call"] = _case(op, [["swap", position, 9, 17]], "ranking", size=11)

for op in ("plackett_luce_loss", "plackett_luce_loss_backward", "listmle", "listwise_kd_loss", "listwise_kd_loss_backward",
           "listwise_kd_loss_and_grads", "listmle_and_grads"):
    lengths = 1 if op.startswith("plackett") else 0  # lengths comes after ranking in the index order
    for value in ("bound", "bound+1", "-1", "big", "int32min"):
        CASES[f"{op} lengths={value}"] = _case(op, [["index", lengths, 0, value]], "lengths", size=11)
    CASES[f"{op} lengths=n"] = _case(op, [["index", lengths, 0, "bound-1"]], None, size=11)

for value in ("bound", "-1", "big", "int32min"):
    CASES[f"pld_loss target={value}"] = _case("pld_loss", [["index", 0, 1, value]], "target", size=12)
CASES["pld_loss target=C-1"] = _case("pld_loss", [["index", 0, 1, "bound-1"]], None, size=12)

for value in ("bound+1", "-1", "-2", "big", "int32min"):
    CASES[f"margin_mse_backward count={value}"] = _case("margin_mse_backward", [["index", 0, 0, value]], "count")
CASES["margin_mse_backward count=B*N"] = _case("margin_mse_backward", [["index", 0, 0, "bound-1"]], None)
CASES["margin_mse_backward count of another call"] = _case("margin_mse_backward", [["swap", 4, 3, 2]], None)
CASES["margin_mse_backward count as float"] = _case("margin_mse_backward", [["dtype", 4, "float32"]], "count")

for op in ("maxsim", "maxsim_backward"):
    index = 1 if op == "maxsim_backward" else 0  # argmax comes first in the index order
    for value, position in (("bound+1", -1), ("big", -1), ("-1", 0), ("-1", 2), ("bound+1", 1), ("int32min", 1)):
        CASES[f"{op} doc_offsets[{position}]={value}"] = _case(op, [["index", index, position, value]], "doc_offsets", size=11)
    CASES[f"{op} doc_offsets non-monotone"] = _case(op, [["index", index, 1, "bound"]], "doc_offsets", size=14)
    CASES[f"{op} doc_offsets of another call"] = _case(op, [["swap", 4 if op == "maxsim" else 5, 4, 29]], "doc_offsets", size=11)


# Saved tensors the CUDA backward ops take as their forward made them (see the module docstring).
UNCHECKED_ON_CUDA = ("maxsim_backward argmax", "plackett_luce_loss_backward ranking", "pld_loss_backward ranking",
                     "margin_mse_backward count=", "margin_mse_backward count of")


@pytest.fixture(scope="module")
def results():
    """Each device's batch, run once when its first test asks (a run selecting one backend, as
    `-m sim` does, starts no worker for the other)."""
    cases = [c for c, _ in CASES.values()]

    @functools.cache
    def of(device: str) -> dict[str, dict]:
        return dict(zip(CASES, run_batch(cases, device)))

    return of


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_index_raises_naming_it_or_is_handled(results, device, name):
    _, raises = CASES[name]
    result = results(device)[name]
    assert result["outcome"] != "fail", result["detail"]
    if raises is None:
        assert result["outcome"] == "matched", result["detail"]
    elif device == "cpu" or not name.startswith(UNCHECKED_ON_CUDA):
        assert result["outcome"] == "raised", "accepted: " + result["detail"]
        assert raises in result["detail"], result["detail"]


def test_every_bound_case_changed_the_call():
    """Each case's mutation did something: the unmutated calls are valid (they all match), so a
    case that raises was broken by its mutation, not by the harness."""
    valid = [dict(case, mutations=[]) for case, _ in CASES.values()]
    assert all(r["outcome"] == "matched" for r in run_batch(valid, DEVICES[0]))
