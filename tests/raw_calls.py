"""Valid calls of every raw op (torch.ops.kdops.*), backward ops included with the tensors
their forward saved, and an oracle per raw op: the same outputs computed in float64 from
kdops.reference, raising where the op's contract refuses the arguments. The memory-safety
tests and the raw-op fuzzer break these calls on purpose and hold the op to "a Python
exception, or the oracle's result"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from kdops import reference



def ops_for(device: str):
    """The op namespace a backend runs: the CUDA kernels on the simulator are
    torch.ops.kdops_sim.* (same schemas, CPU tensors); cpu and cuda are torch.ops.kdops.*."""
    return getattr(torch.ops, "kdops_sim") if device == "sim" else torch.ops.kdops


def tensor_device(device: str) -> str:
    return "cpu" if device == "sim" else device


def _randn(gen, shape, device, dtype, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _half_steps(gen, shape, device, dtype):
    """Multiples of 1/2 in [-1, 1]: dot products are exact in every dtype, so MaxSim's argmax
    never depends on rounding."""
    return (torch.randint(-2, 3, shape, generator=gen).double() / 2).to(device=device, dtype=dtype)


# --- builders: name -> ordered dict of the op's arguments, from (gen, size, device, dtype) ---------


def _margin_mse(gen, size, device, dtype):
    b, n = 1 + size % 5, 2 + size % 4
    mask = (torch.rand(b, n, generator=gen) > 0.2).to(device)
    return {"student": _randn(gen, (b, n), device, dtype), "teacher": _randn(gen, (b, n), device, dtype),
            "mask": mask, "reduction": ("mean", "sum", "none")[size % 3]}


def _margin_mse_backward(gen, size, device, dtype):
    a = _margin_mse(gen, size, device, dtype)
    loss, count = torch.ops.kdops.margin_mse(a["student"], a["teacher"], a["mask"], a["reduction"])
    return {"grad": _randn(gen, loss.shape, device, dtype), **{k: a[k] for k in ("student", "teacher", "mask")},
            "count": count, "reduction": a["reduction"]}


def _pairwise(gen, size, device, dtype):
    b = 1 + size % 6
    names = ("student_pos", "student_neg", "teacher_pos", "teacher_neg")
    return {**{k: _randn(gen, (b,), device, dtype) for k in names}, "reduction": ("mean", "sum", "none")[size % 3]}


def _pairwise_backward(gen, size, device, dtype):
    a = _pairwise(gen, size, device, dtype)
    shape = (a["student_pos"].shape[0],) if a["reduction"] == "none" else ()
    return {"grad": _randn(gen, shape, device, dtype), **a}


def _maxsim(gen, size, device, dtype):
    nq, lq, nd, ld, dim = 1 + size % 3, 1 + size % 4, 1 + size % 3, 1 + size % 5, 1 + size % 6
    layout = size % 3
    q_mask = (torch.rand(nq, lq, generator=gen) > 0.2).to(device)
    Q = _half_steps(gen, (nq, lq, dim), device, dtype)
    if layout == 0:  # all pairs
        D = _half_steps(gen, (nd, ld, dim), device, dtype)
        d_mask, offsets = (torch.rand(nd, ld, generator=gen) > 0.3).to(device), None
    elif layout == 1:  # per query
        D = _half_steps(gen, (nq, nd, ld, dim), device, dtype)
        d_mask, offsets = (torch.rand(nq, nd, ld, generator=gen) > 0.3).to(device), None
    else:  # packed
        lengths = torch.randint(0, ld + 1, (nd,), generator=gen)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(device)
        D, d_mask = _half_steps(gen, (int(lengths.sum()), dim), device, dtype), None
    return {"Q": Q, "D": D, "q_mask": q_mask, "d_mask": d_mask, "doc_offsets": offsets,
            "length_normalize": size % 2 == 0, "with_argmax": (size // 3) % 2 == 0}  # both, every layout


def _maxsim_backward(gen, size, device, dtype):
    a = dict(_maxsim(gen, size, device, dtype), with_argmax=True)  # backward reads the argmax
    scores, argmax = torch.ops.kdops.maxsim(*a.values())
    return {"grad": _randn(gen, scores.shape, device, scores.dtype), "argmax": argmax, "Q": a["Q"], "D": a["D"],
            "q_mask": a["q_mask"], "doc_offsets": a["doc_offsets"], "length_normalize": a["length_normalize"],
            "grad_Q": True, "grad_D": True}


def _rows(gen, size):
    b, n = 1 + size % 4, 1 + size % 6
    return b, n, torch.randint(0, n + 1, (b,), generator=gen)


def _permutations(gen, b, n, lengths):
    rows = [torch.cat([torch.randperm(int(k), generator=gen), torch.arange(int(k), n)]) for k in lengths]
    return torch.stack(rows)


def _plackett_luce(gen, size, device, dtype):
    b, n, lengths = _rows(gen, size)
    return {"scores": _randn(gen, (b, n), device, dtype, 2.0), "ranking": _permutations(gen, b, n, lengths).to(device),
            "weights": _randn(gen, (b, n), device, dtype).abs(), "lengths": lengths.to(device),
            "top_k": (None, 1, 2, 7)[size % 4], "reduction": ("mean", "sum", "none")[size % 3]}


def _row_grad(gen, a, scores_name, device, dtype):
    shape = (a[scores_name].shape[0],) if a["reduction"] == "none" else ()
    return _randn(gen, shape, device, dtype)


def _plackett_luce_backward(gen, size, device, dtype):
    a = _plackett_luce(gen, size, device, dtype)
    return {"grad": _row_grad(gen, a, "scores", device, dtype), **a, "weights_grad": True}


def _listmle(gen, size, device, dtype):
    b, n, lengths = _rows(gen, size)
    relevance = torch.randint(0, 3, (b, n), generator=gen).to(device=device, dtype=dtype)
    return {"scores": _randn(gen, (b, n), device, dtype, 2.0), "relevance": relevance, "lengths": lengths.to(device),
            "top_k": (None, 1, 3)[size % 3], "reduction": ("mean", "sum", "none")[size % 3]}


def _pld(gen, size, device, dtype):
    b, c = 1 + size % 4, 1 + size % 7
    return {"student_logits": _randn(gen, (b, c), device, dtype, 2.0), "teacher_logits": _randn(gen, (b, c), device, dtype, 2.0),
            "target": torch.randint(0, c, (b,), generator=gen).to(device), "temperature": (1.0, 2.0, 0.5)[size % 3],
            "reduction": ("mean", "sum", "none")[size % 3]}


def _pld_backward(gen, size, device, dtype):
    a = _pld(gen, size, device, dtype)
    _, ranking = torch.ops.kdops.pld_loss(*a.values())
    return {"grad": _row_grad(gen, a, "student_logits", device, dtype), "student_logits": a["student_logits"],
            "teacher_logits": a["teacher_logits"], "ranking": ranking, "temperature": a["temperature"],
            "reduction": a["reduction"], "teacher_grad": True}


def _listwise_kd(gen, size, device, dtype):
    b, n, lengths = _rows(gen, size)
    return {"student": _randn(gen, (b, n), device, dtype, 2.0), "teacher": _randn(gen, (b, n), device, dtype, 2.0),
            "lengths": lengths.to(device), "student_temperature": (1.0, 1.5)[size % 2],
            "teacher_temperature": (1.0, 0.7)[size % 2], "reduction": ("mean", "sum", "none")[size % 3]}


def _listwise_kd_backward(gen, size, device, dtype):
    a = _listwise_kd(gen, size, device, dtype)
    return {"grad": _row_grad(gen, a, "student", device, dtype), **a, "teacher_grad": True}


def _pld_and_grads(gen, size, device, dtype):
    return {**_pld(gen, size, device, dtype), "teacher_grad": size % 2 == 0}


def _listwise_kd_and_grads(gen, size, device, dtype):
    return {**_listwise_kd(gen, size, device, dtype), "teacher_grad": size % 2 == 0}


# --- oracles: the contract of each raw op, in float64 on the CPU ----------------------------------


def _f64(t):
    """float64 on the CPU (differentiable for a leaf of _leaf), other dtypes as they are."""
    return t.cpu().double() if t.is_floating_point() else t.cpu()


def _leaf(t):
    return _f64(t.detach()).requires_grad_(True)


def _mask(mask, shape, name):
    """A mask the op accepts: bool, or numbers that are exactly 0 or 1, of the given shape."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        values = _f64(mask)
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(f"{name} must hold only 0 and 1")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} has the wrong shape")
    return _f64(mask).bool()


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError("reduction")


def _margin_terms(student, teacher, mask):
    s, t = _f64(student), _f64(teacher)
    r = (s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])
    valid = torch.ones_like(r, dtype=torch.bool) if mask is None else mask[:, :1] & mask[:, 1:]
    return r, valid


def oracle_margin_mse(student, teacher, mask, reduction):
    _check_reduction(reduction)
    m = _mask(mask, student.shape, "mask")
    r, valid = _margin_terms(student, teacher, m)
    loss = reference.margin_mse(_f64(student), _f64(teacher), mask=m, reduction=reduction)
    return loss, valid.sum()


def oracle_margin_mse_backward(grad, student, teacher, mask, count, reduction, skip_bad_indices=False):
    """skip_bad_indices (the CUDA rule): the count, which the forward made, is not re-checked; it
    only scales 'mean' (a divide by max(count, 1))."""
    _check_reduction(reduction)
    m = _mask(mask, student.shape, "mask")
    r, valid = _margin_terms(student, teacher, m)
    if count.dtype != torch.int64 or count.dim() != 0:
        raise TypeError("count must be an int64 scalar")
    if not skip_bad_indices and not 0 <= int(count) <= r.numel():
        raise ValueError("count out of range")
    g = _f64(grad)
    g = g.reshape(r.shape) if reduction == "none" else g.reshape(()) / (max(int(count), 1) if reduction == "mean" else 1)
    d = torch.where(valid, 2 * r * g, torch.zeros_like(r))
    return torch.cat([d.sum(1, keepdim=True), -d], dim=1)


def oracle_pairwise(student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    _check_reduction(reduction)
    return reference.margin_mse(*map(_f64, (student_pos, student_neg, teacher_pos, teacher_neg)), reduction=reduction)


def oracle_pairwise_backward(grad, student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    sp, sn = _leaf(student_pos), _leaf(student_neg)
    loss = oracle_pairwise(sp, sn, teacher_pos, teacher_neg, reduction)
    return torch.autograd.grad(loss, (sp, sn), _f64(grad).reshape(loss.shape))


def _maxsim_reference(Q, D, q_mask, d_mask, doc_offsets, length_normalize):
    if doc_offsets is not None:
        return reference.maxsim_packed(Q, D, _f64(doc_offsets), q_mask, length_normalize=length_normalize)
    return reference.maxsim(Q, D, q_mask, d_mask, length_normalize=length_normalize)


def _docs(Q, D, d_mask, doc_offsets):
    """Per output column (q, k): the doc's token rows [L, d] and their validity [L]."""
    nq = Q.shape[0]
    if doc_offsets is not None:
        o = _f64(doc_offsets).tolist()
        docs = [(D[o[k]:o[k + 1]], torch.ones(o[k + 1] - o[k], dtype=torch.bool)) for k in range(len(o) - 1)]
        return [docs for _ in range(nq)]
    if D.dim() == 3:
        docs = [(D[k], torch.ones(D.shape[1], dtype=torch.bool) if d_mask is None else d_mask[k]) for k in range(D.shape[0])]
        return [docs for _ in range(nq)]
    return [[(D[q, k], torch.ones(D.shape[2], dtype=torch.bool) if d_mask is None else d_mask[q, k])
             for k in range(D.shape[1])] for q in range(nq)]


def oracle_maxsim(Q, D, q_mask, d_mask, doc_offsets, length_normalize, with_argmax=True):
    """Scores and the first maximal doc token of each query token (an empty int32 [0] when
    with_argmax is False)."""
    q_m = _mask(q_mask, Q.shape[:2], "q_mask")
    d_m = _mask(d_mask, D.shape[:-1], "d_mask")
    Qd, Dd = _f64(Q), _f64(D)
    scores = _maxsim_reference(Qd, Dd, q_m, d_m, doc_offsets, length_normalize)
    if not with_argmax:
        return scores.to(torch.float64), torch.zeros(0, dtype=torch.int32)
    argmax = torch.full((Q.shape[0], scores.shape[1], Q.shape[1]), -1, dtype=torch.int32)
    for q, docs in enumerate(_docs(Qd, Dd, d_m, doc_offsets)):
        for k, (tokens, valid) in enumerate(docs):
            if not bool(valid.any()):
                continue
            sim = (Qd[q] @ tokens.T).masked_fill(~valid, float("-inf"))
            sim = torch.where(sim.isnan(), float("inf"), sim)  # NaN ranks first
            best = sim.max(dim=1, keepdim=True).values
            first = (sim == best).int().argmax(dim=1)
            keep = torch.ones(Q.shape[1], dtype=torch.bool) if q_m is None else q_m[q]
            argmax[q, k] = torch.where(keep, first.int(), -1)
    return scores.to(torch.float64), argmax


def oracle_maxsim_backward(grad, argmax, Q, D, q_mask, doc_offsets, length_normalize, grad_Q, grad_D,
                           skip_bad_indices=False):
    """dQ and dD from the given argmax. An index outside [-1, doc length) is an IndexError, or
    (skip_bad_indices: the CUDA kernels' rule, which cannot raise without a sync) adds nothing."""
    q_m = _mask(q_mask, Q.shape[:2], "q_mask")
    Qd, Dd = _f64(Q), _f64(D)
    w = _f64(grad)
    if length_normalize:
        lengths = torch.full((Q.shape[0], 1), Q.shape[1], dtype=torch.float64) if q_m is None else q_m.sum(1, keepdim=True).double()
        w = w / lengths.clamp(min=1)
    dQ, dD = torch.zeros_like(Qd), torch.zeros_like(Dd)
    dD_rows = dD.view(-1, Dd.shape[-1])
    for q, docs in enumerate(_docs(Qd, Dd, None, doc_offsets)):
        for k, (tokens, _) in enumerate(docs):
            start = _doc_start(Dd, doc_offsets, q, k)
            for i in range(Q.shape[1]):
                j = int(argmax[q, k, i])
                if j == -1:
                    continue
                if not 0 <= j < tokens.shape[0]:
                    if skip_bad_indices:
                        continue
                    raise IndexError("argmax out of range")
                dQ[q, i] += w[q, k] * tokens[j]
                dD_rows[start + j] += w[q, k] * Qd[q, i]
    return (dQ if grad_Q else Qd.new_empty(0)), (dD if grad_D else Dd.new_empty(0))


def _doc_start(D, doc_offsets, q, k):
    if doc_offsets is not None:
        return int(doc_offsets[k])
    if D.dim() == 3:
        return k * D.shape[1]
    return (q * D.shape[1] + k) * D.shape[2]


def _check_rows(scores, lengths, ranking=None):
    b, n = scores.shape
    if lengths is not None:
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or tuple(lengths.shape) != (b,):
            raise ValueError("lengths must be integers [B]")
        if bool(((lengths < 0) | (lengths > n)).any()):
            raise IndexError("lengths out of range")
    if ranking is not None:
        if ranking.dtype != torch.int64 or ranking.shape != scores.shape:
            raise ValueError("ranking must be int64 [B, n]")
        for row in range(b):
            length = n if lengths is None else int(lengths[row])
            if sorted(ranking[row, :length].tolist()) != list(range(length)):
                raise ValueError("ranking is not a permutation")


def oracle_plackett_luce(scores, ranking, weights, lengths, top_k, reduction):
    _check_reduction(reduction)
    _check_rows(scores, lengths, ranking)
    return reference.plackett_luce_loss(_f64(scores), _f64(ranking), None if weights is None else _f64(weights),
                                        None if lengths is None else _f64(lengths), top_k, reduction)


class UnspecifiedResult(Exception):
    """The oracle's answer where the contract leaves the result open: the CUDA backward ops do not
    re-check that a saved ranking is a permutation (it comes from their forward); given one that
    is not, they must stay memory-safe and return outputs of the right shapes, values unspecified."""

    def __init__(self, shapes):
        super().__init__("unspecified result")
        self.shapes = shapes


def _unchecked_ranking(scores, lengths, ranking, weights_grad_rows):
    """skip_bad_indices (the CUDA rule): a ranking that is not a permutation leaves the result open."""
    try:
        _check_rows(scores, lengths, ranking)
    except ValueError as e:
        if "not a permutation" in str(e):
            b, n = scores.shape
            raise UnspecifiedResult([(b, n), (weights_grad_rows, n)]) from None
        raise


def oracle_plackett_luce_backward(grad, scores, ranking, weights, lengths, top_k, reduction, weights_grad,
                                  skip_bad_indices=False):
    if skip_bad_indices:
        _check_reduction(reduction)
        _unchecked_ranking(scores, lengths, ranking, scores.shape[0] if weights_grad else 0)
    s = _leaf(scores)
    w = None if weights is None else _leaf(weights)
    loss = oracle_plackett_luce(s, ranking, w, lengths, top_k, reduction)
    wrt = (s, w) if weights_grad else (s,)
    grads = torch.autograd.grad(loss, wrt, _f64(grad).reshape(loss.shape), allow_unused=True)
    return grads[0], (grads[1] if weights_grad else torch.zeros(0, scores.shape[1], dtype=torch.float64))


def oracle_listmle(scores, relevance, lengths, top_k, reduction):
    _check_reduction(reduction)
    _check_rows(scores, lengths)
    s, rel = _f64(scores), _f64(relevance).to(scores.dtype).double()
    valid = reference._valid_columns(s, None if lengths is None else _f64(lengths))
    key = torch.where(valid, rel, float("-inf"))
    ranking = torch.sort(key, dim=1, descending=True, stable=True).indices
    loss = reference.plackett_luce_loss(s, ranking, lengths=None if lengths is None else _f64(lengths), top_k=top_k,
                                        reduction=reduction)
    return loss, ranking


def oracle_listmle_and_grads(scores, relevance, lengths, top_k, reduction):
    s = _leaf(scores)
    loss, ranking = oracle_listmle(s, relevance, lengths, top_k, reduction)
    (grad,) = torch.autograd.grad(loss, (s,), torch.ones(loss.shape, dtype=torch.float64))
    return loss.detach(), ranking, grad


def _check_target(target, b, c):
    if target.dtype.is_floating_point or target.dtype == torch.bool or tuple(target.shape) != (b,):
        raise ValueError("target must be integers [B]")
    if bool(((target < 0) | (target >= c)).any()):
        raise IndexError("target out of range")


def oracle_pld(student_logits, teacher_logits, target, temperature, reduction):
    _check_reduction(reduction)
    _check_target(target, *student_logits.shape)
    s, t = _f64(student_logits), _f64(teacher_logits)
    t = t.to(student_logits.dtype).double()  # ranked in the input dtype
    loss = reference.pld_loss(s, t, _f64(target), temperature, reduction)
    return loss, reference.pld_ranking(t, _f64(target))


def oracle_pld_backward(grad, student_logits, teacher_logits, ranking, temperature, reduction, teacher_grad,
                        skip_bad_indices=False):
    _check_reduction(reduction)
    if skip_bad_indices:
        _unchecked_ranking(student_logits, None, ranking, student_logits.shape[0] if teacher_grad else 0)
    _check_rows(student_logits, None, ranking)
    s, t = _leaf(student_logits), _leaf(teacher_logits)
    weights = torch.softmax(t / temperature, dim=1).gather(1, _f64(ranking))
    loss = reference.plackett_luce_loss(s, _f64(ranking), weights=weights, reduction=reduction)
    gs, gt = torch.autograd.grad(loss, (s, t), _f64(grad).reshape(loss.shape))
    return gs, (gt if teacher_grad else torch.zeros(0, s.shape[1], dtype=torch.float64))


def oracle_listwise_kd(student, teacher, lengths, student_temperature, teacher_temperature, reduction):
    _check_reduction(reduction)
    _check_rows(student, lengths)
    return reference.listwise_kd_loss(_f64(student), _f64(teacher), student_temperature=student_temperature,
                                      teacher_temperature=teacher_temperature,
                                      lengths=None if lengths is None else _f64(lengths), reduction=reduction)


def oracle_listwise_kd_backward(grad, student, teacher, lengths, student_temperature, teacher_temperature,
                                reduction, teacher_grad):
    s, t = _leaf(student), _leaf(teacher)
    loss = oracle_listwise_kd(s, t, lengths, student_temperature, teacher_temperature, reduction)
    gs, gt = torch.autograd.grad(loss, (s, t), _f64(grad).reshape(loss.shape))
    return gs, (gt if teacher_grad else torch.zeros(0, s.shape[1], dtype=torch.float64))


def oracle_pld_and_grads(student_logits, teacher_logits, target, temperature, reduction, teacher_grad):
    loss, ranking = oracle_pld(student_logits, teacher_logits, target, temperature, reduction)
    ones = torch.ones(loss.shape, dtype=torch.float64)
    return (loss, ranking, *oracle_pld_backward(ones, student_logits, teacher_logits, ranking, temperature, reduction,
                                                teacher_grad))


def oracle_listwise_kd_and_grads(student, teacher, lengths, student_temperature, teacher_temperature, reduction,
                                 teacher_grad):
    loss = oracle_listwise_kd(student, teacher, lengths, student_temperature, teacher_temperature, reduction)
    ones = torch.ones(loss.shape, dtype=torch.float64)
    return (loss, *oracle_listwise_kd_backward(ones, student, teacher, lengths, student_temperature,
                                               teacher_temperature, reduction, teacher_grad))


@dataclass
class RawOp:
    name: str
    build: Callable  # (gen, size, device, dtype) -> dict of arguments in schema order
    oracle: Callable  # (**arguments) -> output(s) in float64 on the CPU, or raises

    def op(self, device: str = "cpu"):
        return getattr(ops_for(device), self.name).default


RAW_OPS = [
    RawOp("margin_mse", _margin_mse, oracle_margin_mse),
    RawOp("margin_mse_backward", _margin_mse_backward, oracle_margin_mse_backward),
    RawOp("margin_mse_pairwise", _pairwise, oracle_pairwise),
    RawOp("margin_mse_pairwise_backward", _pairwise_backward, oracle_pairwise_backward),
    RawOp("maxsim", _maxsim, oracle_maxsim),
    RawOp("maxsim_backward", _maxsim_backward, oracle_maxsim_backward),
    RawOp("plackett_luce_loss", _plackett_luce, oracle_plackett_luce),
    RawOp("plackett_luce_loss_backward", _plackett_luce_backward, oracle_plackett_luce_backward),
    RawOp("listmle", _listmle, oracle_listmle),
    RawOp("pld_loss", _pld, oracle_pld),
    RawOp("pld_loss_backward", _pld_backward, oracle_pld_backward),
    RawOp("listwise_kd_loss", _listwise_kd, oracle_listwise_kd),
    RawOp("listwise_kd_loss_backward", _listwise_kd_backward, oracle_listwise_kd_backward),
    RawOp("listmle_and_grads", _listmle, oracle_listmle_and_grads),
    RawOp("pld_loss_and_grads", _pld_and_grads, oracle_pld_and_grads),
    RawOp("listwise_kd_loss_and_grads", _listwise_kd_and_grads, oracle_listwise_kd_and_grads),
]
RAW_OP_BY_NAME = {r.name: r for r in RAW_OPS}


def build(name: str, seed: int, size: int, device: str = "cpu", dtype: torch.dtype = torch.float64) -> dict:
    """A valid call of raw op `name`; the saved tensors of a backward op come from its forward."""
    return RAW_OP_BY_NAME[name].build(torch.Generator().manual_seed(seed), size, tensor_device(device), dtype)


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def assert_matches_oracle(name: str, args: dict, out, skip_bad_indices: bool = False) -> None:
    """The op's outputs equal the oracle's (the oracle raising means the op should have)."""
    from tests.helpers import tolerance

    unchecked = {"maxsim_backward", "plackett_luce_loss_backward", "pld_loss_backward", "margin_mse_backward"}
    kwargs = {"skip_bad_indices": True} if skip_bad_indices and name in unchecked else {}
    actual = _flat(out)
    try:
        expected = _flat(RAW_OP_BY_NAME[name].oracle(*args.values(), **kwargs))
    except UnspecifiedResult as e:
        assert [tuple(a.shape) for a in actual] == e.shapes, f"{name}: shapes {[tuple(a.shape) for a in actual]} != {e.shapes}"
        return
    assert len(actual) == len(expected), name
    for a, e in zip(actual, expected):
        if not a.is_floating_point():
            assert torch.equal(a.cpu().long(), e.long()), f"{name}: {a} != {e}"
            continue
        tol = tolerance(a.dtype)
        scale = max(1.0, float(e.abs().nan_to_num(0, 0, 0).max()) if e.numel() else 1.0)
        assert tuple(a.shape) == tuple(e.shape), f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        torch.testing.assert_close(a.detach().cpu().double(), e.detach().to(a.dtype).double(), rtol=tol["rtol"],
                                   atol=tol["atol"] * scale, equal_nan=True, msg=lambda m: f"{name}: {m}")
