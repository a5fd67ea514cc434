"""Runs a batch of raw-op fuzz examples in this process (tests/test_fuzz_raw_ops.py starts one
process per batch, so that a crash, an abort or a hang is seen from outside).

Reads a JSON list of examples on stdin. Each example is a valid call from tests/raw_calls.py
(op, seed, size, dtype) broken by a list of mutations; see `mutate`. Prints one JSON line per
example: {"start": i} before the call (so the parent can name the example that killed the
process), then {"done": i, "outcome": "raised" | "matched" | "fail", "detail": ...}. An op may
raise (any Python exception) or return what the oracle returns; returning anything else, or
returning where the oracle refuses the arguments, is a failure."""

from __future__ import annotations

import json
import math
import sys
import traceback

import torch

import kdops  # noqa: F401  (registers the fake kernels and autograd)
from tests import raw_calls

DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "bool": torch.bool,
}
INDEX_ARGS = ("argmax", "ranking", "count", "doc_offsets", "lengths", "target")
MASK_ARGS = ("mask", "q_mask", "d_mask")


def _tensor_names(args: dict) -> list[str]:
    return [k for k, v in args.items() if isinstance(v, torch.Tensor)]


def _pick(names: list[str], selector: int) -> str | None:
    return names[selector % len(names)] if names else None


def _bound(name: str, args: dict) -> int:
    """The first value past the valid range of index argument `name`."""
    if name == "argmax":
        D, offsets = args["D"], args["doc_offsets"]
        if offsets is not None and offsets.numel() > 1:
            return int((offsets[1:] - offsets[:-1]).max())
        return D.shape[-2] if D.dim() >= 3 else D.shape[0]
    if name == "count":
        s = args["student"]
        return s.shape[0] * (s.shape[1] - 1) + 1 if s.dim() == 2 else 1
    if name == "doc_offsets":
        return args["D"].shape[0]
    scores = next(args[k] for k in ("scores", "student_logits", "student") if k in args)
    return scores.shape[-1] + (1 if name == "lengths" else 0)


def _index_value(kind: str, bound: int) -> int:
    return {"bound": bound, "bound-1": bound - 1, "bound+1": bound + 1, "-1": -1, "-2": -2, "big": 10**6,
            "int32max": 2**31 - 1, "int32min": -(2**31)}[kind]


def _set_element(t: torch.Tensor, position: int, value) -> torch.Tensor:
    t = t.clone()
    if t.numel() == 0:
        return t
    flat = t.view(-1)
    if t.dtype == torch.int32:
        value = max(min(value, 2**31 - 1), -(2**31))
    flat[position % flat.numel()] = value
    return t


def mutate(args: dict, m: list, name: str, device: str) -> None:
    """Applies mutation m (a JSON list: [kind, ...]) to the arguments in place."""
    kind = m[0]
    tensors = _tensor_names(args)
    if kind == "swap":  # the same argument from another call (other shapes and values)
        arg = _pick(list(args), m[1])
        # The call's float dtype, whatever earlier dtype mutations made of its tensors: building a
        # call in bool or an integer type is a harness error, not a probe of the op.
        floats = [args[t].dtype for t in tensors if args[t].dtype.is_floating_point]
        other = raw_calls.build(name, m[2], m[3], device, floats[0] if floats else torch.float64)
        args[arg] = other[arg]
    elif kind == "dtype":
        arg = _pick(tensors, m[1])
        if arg:
            args[arg] = args[arg].to(DTYPES[m[2]])
    elif kind == "meta":
        arg = _pick(tensors, m[1])
        if arg:
            args[arg] = args[arg].to("meta")
    elif kind == "index":
        present = [a for a in INDEX_ARGS if isinstance(args.get(a), torch.Tensor)]
        arg = _pick(present, m[1])
        if arg:
            args[arg] = _set_element(args[arg], m[2], _index_value(m[3], _bound(arg, args)))
    elif kind == "duplicate":  # two equal entries in a ranking or an offsets row
        present = [a for a in ("ranking", "doc_offsets", "argmax") if isinstance(args.get(a), torch.Tensor)]
        arg = _pick(present, m[1])
        if arg and args[arg].numel() >= 2:
            t = args[arg].clone().view(-1)
            t[m[2] % t.numel()] = t[(m[2] + 1) % t.numel()]
            args[arg] = t.view(args[arg].shape)
    elif kind == "mask_value":
        present = [a for a in MASK_ARGS if isinstance(args.get(a), torch.Tensor)]
        arg = _pick(present, m[1])
        if arg:
            dtype = torch.float32 if isinstance(m[3], float) or m[3] in ("nan", 0.5) else torch.int64
            value = math.nan if m[3] == "nan" else m[3]
            args[arg] = _set_element(args[arg].to(dtype), m[2], value)
    elif kind == "layout":  # non-contiguous, expanded (stride 0), an extra or a missing dim, empty
        arg = _pick(tensors, m[1])
        if not arg or args[arg].dim() == 0:
            return
        t = args[arg]
        if m[2] == "strided":
            wide = torch.zeros(*t.shape[:-1], t.shape[-1] * 2, dtype=t.dtype, device=t.device)
            wide[..., ::2] = t
            args[arg] = wide[..., ::2]
        elif m[2] == "expand" and t.shape[0] > 0:
            args[arg] = t[:1].expand_as(t)
        elif m[2] == "unsqueeze":
            args[arg] = t.unsqueeze(0)
        elif m[2] == "flatten":
            args[arg] = t.flatten()
        elif m[2] == "empty":
            args[arg] = t[:0]
    elif kind == "none":
        optional = [k for k in ("mask", "q_mask", "d_mask", "doc_offsets", "weights", "lengths") if k in args]
        arg = _pick(optional, m[1])
        if arg:
            args[arg] = None
    elif kind == "scalar":
        scalars = [k for k, v in args.items() if not isinstance(v, torch.Tensor) and v is not None]
        arg = _pick(scalars, m[1])
        if not arg:
            return
        value = args[arg]
        if isinstance(value, bool):
            args[arg] = not value
        elif isinstance(value, str):
            args[arg] = ("mean", "sum", "none", "max", "")[m[2] % 5]
        elif isinstance(value, float):
            args[arg] = (0.0, -1.0, math.inf, math.nan, 1e-30, 1e30)[m[2] % 6]
        elif isinstance(value, int):
            args[arg] = (0, -1, 10**9, 2**62)[m[2] % 4]
    elif kind == "top_k" and "top_k" in args:
        args["top_k"] = (None, 0, -3, 1, 10**9)[m[1] % 5]


def _on_meta(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_meta


def run_example(ex: dict, device: str) -> tuple[str, str]:
    name = ex["op"]
    args = raw_calls.build(name, ex["seed"], ex["size"], device, DTYPES[ex["dtype"]])
    for m in ex["mutations"]:
        mutate(args, m, name, device)
    real = dict(args)
    if ex.get("all_meta"):
        args = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    op = raw_calls.RAW_OP_BY_NAME[name].op(device)
    try:
        out = op(*args.values())
    except Exception as e:  # noqa: BLE001  (any Python exception is an accepted outcome)
        return "raised", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    tensors = [v for v in args.values() if isinstance(v, torch.Tensor)]
    if any(t.is_meta for t in tensors):
        if not all(t.is_meta for t in tensors):
            return "fail", "returned for arguments on mixed devices (meta and " + device + ")"
        # All meta: the fake kernel's outputs must be those the real kernel returns.
        try:
            real_out = op(*real.values())
        except Exception:  # noqa: BLE001  (the fake kernel cannot check values)
            return "matched", "fake kernel; real kernel refuses"
        real_outs = list(real_out) if isinstance(real_out, (tuple, list)) else [real_out]
        for f, r in zip(outs, real_outs):
            if not f.is_meta or f.shape != r.shape or f.dtype != r.dtype:
                return "fail", f"fake output {f.device} {tuple(f.shape)} {f.dtype} != real {tuple(r.shape)} {r.dtype}"
        return "matched", "fake kernel"
    try:
        raw_calls.assert_matches_oracle(name, args, out, skip_bad_indices=device != "cpu")
    except (ValueError, IndexError, TypeError, RuntimeError) as e:
        return "fail", f"returned, but the contract refuses these arguments: {type(e).__name__}: {e}"
    except AssertionError as e:
        return "fail", f"result differs from the oracle: {str(e)[:600]}"
    return "matched", ""


def main() -> None:
    examples = json.load(sys.stdin)
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    for i, ex in enumerate(examples):
        print(json.dumps({"start": i}), flush=True)
        try:
            outcome, detail = run_example(ex, device)
        except Exception:  # noqa: BLE001  (a bug in the harness, reported as a failure)
            outcome, detail = "fail", "harness error: " + traceback.format_exc()[-800:]
        print(json.dumps({"done": i, "outcome": outcome, "detail": detail}), flush=True)


if __name__ == "__main__":
    main()
