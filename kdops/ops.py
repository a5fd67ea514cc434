"""Loads kdops._C (which defines torch.ops.kdops.*) and registers, for each op, the fake kernel
used by torch.compile and the autograd formula. The backward of every op is an op of its own
(``<op>_backward``), so compiled graphs keep it fused too; double backward is not supported
and says so.

When kdops._C_sim was built (``KDOPS_SIM=1``: the CUDA kernels run on CPU tensors by the
project's CUDA simulator, for tests), its ops torch.ops.kdops_sim.* get the same fake kernels
and autograd: every definition below is registered once per namespace in NAMESPACES."""

from __future__ import annotations

import importlib.util

import torch

from kdops import _C

# Not built unless asked for; when its file exists, an import error is a real error.
_C_sim = importlib.import_module("kdops._C_sim") if importlib.util.find_spec("kdops._C_sim") else None

__all__ = ["NAMESPACES", "build_info", "built_with_cuda", "built_with_simulator"]

NAMESPACES = ("kdops", "kdops_sim") if _C_sim is not None else ("kdops",)

# Filled by the definitions below, registered for every namespace at the end of the file.
_FAKES: dict = {}
_AUTOGRAD: dict = {}
_BACKWARD_OPS: list[str] = []


def _fake(op: str):
    def record(fn):
        _FAKES[op] = fn
        return fn

    return record


def _autograd(op: str, backward, setup_context) -> None:
    """backward(ctx, *grads) calls the op's backward op through ctx.ops, the namespace of the op
    being differentiated (set by the registered setup_context)."""
    _AUTOGRAD[op] = (backward, setup_context)

_BACKENDS = ("CPU", "CUDA")


def built_with_cuda() -> bool:
    """Whether kdops._C holds CUDA kernels (decided at build time, not by a visible GPU)."""
    return bool(_C.build_info()["cuda"])


def built_with_simulator() -> bool:
    """Whether kdops._C_sim (torch.ops.kdops_sim: the CUDA kernels on the simulator) was built."""
    return _C_sim is not None


def _op_backends(op: str) -> list[str]:
    return [key for key in _BACKENDS if torch._C._dispatch_has_kernel_for_dispatch_key(op, key)]


def _arch_names(compiled: str) -> list[str]:
    """'800,900 ptx:90' (csrc/cuda/build_info.cu) -> ['sm_80', 'sm_90', 'compute_90']: the GPU
    archs with machine code, then the PTX kept for newer GPUs; [] without CUDA kernels."""
    if not compiled:
        return []
    archs, _, ptx = compiled.partition(" ptx:")
    names = [f"sm_{int(a) // 10}" for a in archs.split(",") if a.strip().isdigit()]
    if ptx.strip() not in ("", "0"):
        names.append(f"compute_{int(ptx)}")  # setup.py writes it as 100 for 10.0
    return names


def build_info() -> dict:
    """How kdops was built and what it can run: torch and CUDA versions, whether CUDA kernels
    were compiled and for which archs, whether the simulated CUDA kernels (kdops._C_sim) were
    built, and the backends with a kernel for every kdops op ("sim": torch.ops.kdops_sim)."""
    build = _C.build_info()
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("kdops::"))

    def backends(name: str) -> list[str]:
        sim = _C_sim is not None and "CPU" in _op_backends(name.replace("kdops::", "kdops_sim::", 1))
        return _op_backends(name) + (["sim"] if sim else [])

    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_kernels": bool(build["cuda"]),
        "cuda_archs": _arch_names(str(build["cuda_archs"])),
        "cuda_available": torch.cuda.is_available(),
        "simulator": _C_sim is not None,
        "ops": {name.removeprefix("kdops::"): backends(name) for name in names},
    }


def _needs(ctx, *index: int) -> bool:
    return any(ctx.needs_input_grad[i] for i in index)


def _no_double_backward(op: str) -> None:
    _BACKWARD_OPS.append(op)


# --- Margin-MSE -------------------------------------------------------------------------------


def _check_reduction(reduction: str) -> None:
    torch._check(reduction in ("mean", "sum", "none"), lambda: f"invalid reduction {reduction!r}")


@_fake("margin_mse")
def _(student, teacher, mask, reduction):
    torch._check(student.dim() == 2 and student.shape[1] >= 2, lambda: "student must be [B, 1+N]")
    torch._check(teacher.shape == student.shape, lambda: "teacher must have the shape of student")
    torch._check(teacher.dtype == student.dtype, lambda: "teacher must have the dtype of student")
    torch._check(mask is None or mask.shape == student.shape, lambda: "mask must have the shape of student")
    _check_reduction(reduction)
    b, n = student.shape[0], student.shape[1] - 1
    loss = student.new_empty((b, n) if reduction == "none" else ())
    return loss, student.new_empty((), dtype=torch.int64)


@_fake("margin_mse_backward")
def _(grad, student, teacher, mask, count, reduction):
    return torch.empty_like(student, memory_format=torch.contiguous_format)


def _margin_mse_setup(ctx, inputs, output):
    student, teacher, mask, reduction = inputs
    ctx.reduction = reduction
    ctx.mark_non_differentiable(output[1])
    if _needs(ctx, 0, 1):
        ctx.save_for_backward(student, teacher, mask, output[1])


def _margin_mse_backward(ctx, grad_loss, _grad_count):
    student, teacher, mask, count = ctx.saved_tensors
    grad_student = ctx.ops.margin_mse_backward.default(
        grad_loss, student, teacher, mask, count, ctx.reduction
    )
    return (
        grad_student if ctx.needs_input_grad[0] else None,
        -grad_student if ctx.needs_input_grad[1] else None,
        None,
        None,
    )


_autograd("margin_mse", _margin_mse_backward, _margin_mse_setup)
_no_double_backward("margin_mse_backward")


@_fake("margin_mse_pairwise")
def _(student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    torch._check(student_pos.dim() == 1, lambda: "student_pos must be [B]")
    for t in (student_neg, teacher_pos, teacher_neg):
        torch._check(t.shape == student_pos.shape, lambda: "all four scores must be [B]")
        torch._check(t.dtype == student_pos.dtype, lambda: "all four scores must share a dtype")
    _check_reduction(reduction)
    return student_pos.new_empty(student_pos.shape if reduction == "none" else ())


@_fake("margin_mse_pairwise_backward")
def _(grad, student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    return torch.empty_like(student_pos), torch.empty_like(student_neg)


def _margin_mse_pairwise_setup(ctx, inputs, output):
    *scores, reduction = inputs
    ctx.reduction = reduction
    if _needs(ctx, 0, 1, 2, 3):
        ctx.save_for_backward(*scores)


def _margin_mse_pairwise_backward(ctx, grad):
    grad_pos, grad_neg = ctx.ops.margin_mse_pairwise_backward.default(
        grad, *ctx.saved_tensors, ctx.reduction
    )
    needs = ctx.needs_input_grad
    return (
        grad_pos if needs[0] else None,
        grad_neg if needs[1] else None,
        -grad_pos if needs[2] else None,
        -grad_neg if needs[3] else None,
        None,
    )


_autograd("margin_mse_pairwise", _margin_mse_pairwise_backward, _margin_mse_pairwise_setup)
_no_double_backward("margin_mse_pairwise_backward")


# --- MaxSim -----------------------------------------------------------------------------------


def _maxsim_columns(Q, D, doc_offsets) -> int:
    if doc_offsets is not None:
        torch._check(D.dim() == 2, lambda: "D_tokens must be [T, d] when doc_offsets is given")
        torch._check(doc_offsets.dim() == 1, lambda: "doc_offsets must be [Nd + 1]")
        return doc_offsets.shape[0] - 1
    torch._check(D.dim() in (3, 4), lambda: "D must be [Nd, Ld, d] or [Nq, K, Ld, d]")
    if D.dim() == 4:
        torch._check(D.shape[0] == Q.shape[0], lambda: "D must be [Nq, K, Ld, d] with Nq of Q")
        return D.shape[1]
    return D.shape[0]


def _maxsim_score_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@_fake("maxsim")
def _(Q, D, q_mask, d_mask, doc_offsets, length_normalize):
    torch._check(Q.dim() == 3, lambda: "Q must be [Nq, Lq, d]")
    torch._check(D.dtype == Q.dtype, lambda: "D must have the dtype of Q")
    torch._check(D.shape[-1] == Q.shape[-1], lambda: "D must have the embedding size d of Q")
    columns = _maxsim_columns(Q, D, doc_offsets)
    torch._check(q_mask is None or q_mask.shape == Q.shape[:2], lambda: "q_mask must be [Nq, Lq]")
    torch._check(d_mask is None or (doc_offsets is None and d_mask.shape == D.shape[:-1]),
                 lambda: "d_mask must be D.shape[:-1] (and is not accepted with doc_offsets)")
    nq, lq = Q.shape[0], Q.shape[1]
    scores = Q.new_empty((nq, columns), dtype=_maxsim_score_dtype(Q.dtype))
    return scores, Q.new_empty((nq, columns, lq), dtype=torch.int32)


@_fake("maxsim_backward")
def _(grad, argmax, Q, D, q_mask, doc_offsets, length_normalize, grad_Q, grad_D):
    contiguous = torch.contiguous_format
    dQ = torch.empty_like(Q, memory_format=contiguous) if grad_Q else Q.new_empty(0)
    dD = torch.empty_like(D, memory_format=contiguous) if grad_D else D.new_empty(0)
    return dQ, dD


def _maxsim_setup(ctx, inputs, output):
    Q, D, q_mask, _d_mask, doc_offsets, length_normalize = inputs
    ctx.length_normalize = length_normalize
    ctx.mark_non_differentiable(output[1])
    if _needs(ctx, 0, 1):
        # The doc mask is not needed: it is encoded in argmax (-1 where no valid token won).
        ctx.save_for_backward(Q, D, q_mask, doc_offsets, output[1])


def _maxsim_backward(ctx, grad_scores, _grad_argmax):
    Q, D, q_mask, doc_offsets, argmax = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grad_q, grad_d = ctx.ops.maxsim_backward.default(
        grad_scores, argmax, Q, D, q_mask, doc_offsets, ctx.length_normalize, needs[0], needs[1]
    )
    return grad_q if needs[0] else None, grad_d if needs[1] else None, None, None, None, None


_autograd("maxsim", _maxsim_backward, _maxsim_setup)
_no_double_backward("maxsim_backward")
# --- Plackett-Luce family ---------------------------------------------------------------------


def _check_rows(scores, name):
    torch._check(scores.dim() == 2, lambda: f"{name} must be [B, n]")


def _row_loss(scores, reduction):
    _check_reduction(reduction)
    return scores.new_empty((scores.shape[0],) if reduction == "none" else ())


def _grad_if(scores, wanted):
    """The second gradient of a *_backward op: [B, n], or empty [0, n] when not asked for."""
    return scores.new_empty((scores.shape[0] if wanted else 0, scores.shape[1]))


@_fake("plackett_luce_loss")
def _(scores, ranking, weights, lengths, top_k, reduction):
    _check_rows(scores, "scores")
    torch._check(ranking.shape == scores.shape, lambda: "ranking must have the shape of scores")
    torch._check(weights is None or weights.shape == scores.shape, lambda: "weights must have the shape of scores")
    return _row_loss(scores, reduction)


@_fake("plackett_luce_loss_backward")
def _(grad, scores, ranking, weights, lengths, top_k, reduction, weights_grad):
    return torch.empty_like(scores, memory_format=torch.contiguous_format), _grad_if(scores, weights_grad)


def _plackett_luce_setup(ctx, inputs, output):
    scores, ranking, weights, lengths, top_k, reduction = inputs
    ctx.top_k, ctx.reduction = top_k, reduction
    if _needs(ctx, 0, 2):
        ctx.save_for_backward(scores, ranking, weights, lengths)


def _plackett_luce_backward(ctx, grad):
    scores, ranking, weights, lengths = ctx.saved_tensors
    grad_scores, grad_weights = ctx.ops.plackett_luce_loss_backward.default(
        grad, scores, ranking, weights, lengths, ctx.top_k, ctx.reduction, ctx.needs_input_grad[2]
    )
    return (
        grad_scores if ctx.needs_input_grad[0] else None,
        None,
        grad_weights if ctx.needs_input_grad[2] else None,
        None,
        None,
        None,
    )


_autograd("plackett_luce_loss", _plackett_luce_backward, _plackett_luce_setup)
_no_double_backward("plackett_luce_loss_backward")


@_fake("listmle")
def _(scores, relevance, lengths, top_k, reduction):
    _check_rows(scores, "scores")
    torch._check(relevance.shape == scores.shape, lambda: "relevance must have the shape of scores")
    return _row_loss(scores, reduction), scores.new_empty(scores.shape, dtype=torch.int64)


def _listmle_setup(ctx, inputs, output):
    scores, relevance, lengths, top_k, reduction = inputs
    ctx.top_k, ctx.reduction = top_k, reduction
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the int64 ranking
    if _needs(ctx, 0):
        ctx.save_for_backward(scores, lengths, output[1])


def _listmle_backward(ctx, grad, _grad_ranking):
    # The ranking is piecewise constant in the relevance: relevance gets no gradient.
    if grad is None:  # only the ranking was used downstream
        return None, None, None, None, None
    scores, lengths, ranking = ctx.saved_tensors
    grad_scores, _ = ctx.ops.plackett_luce_loss_backward.default(
        grad, scores, ranking, None, lengths, ctx.top_k, ctx.reduction, False
    )
    return grad_scores, None, None, None, None


_autograd("listmle", _listmle_backward, _listmle_setup)


@_fake("pld_loss")
def _(student_logits, teacher_logits, target, temperature, reduction):
    _check_rows(student_logits, "student_logits")
    torch._check(
        teacher_logits.shape == student_logits.shape, lambda: "teacher_logits must have the shape of student_logits"
    )
    torch._check(target.shape == student_logits.shape[:1], lambda: "target must be [B]")
    return _row_loss(student_logits, reduction), student_logits.new_empty(student_logits.shape, dtype=torch.int64)


@_fake("pld_loss_backward")
def _(grad, student_logits, teacher_logits, ranking, temperature, reduction, teacher_grad):
    return (
        torch.empty_like(student_logits, memory_format=torch.contiguous_format),
        _grad_if(student_logits, teacher_grad),
    )


def _pld_setup(ctx, inputs, output):
    student, teacher, target, temperature, reduction = inputs
    ctx.temperature, ctx.reduction = temperature, reduction
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the int64 ranking
    if _needs(ctx, 0, 1):
        ctx.save_for_backward(student, teacher, output[1])


def _pld_backward(ctx, grad, _grad_ranking):
    if grad is None:  # only the ranking was used downstream
        return None, None, None, None, None
    student, teacher, ranking = ctx.saved_tensors
    grad_student, grad_teacher = ctx.ops.pld_loss_backward.default(
        grad, student, teacher, ranking, ctx.temperature, ctx.reduction, ctx.needs_input_grad[1]
    )
    return (
        grad_student if ctx.needs_input_grad[0] else None,
        grad_teacher if ctx.needs_input_grad[1] else None,
        None,
        None,
        None,
    )


_autograd("pld_loss", _pld_backward, _pld_setup)
_no_double_backward("pld_loss_backward")


@_fake("listwise_kd_loss")
def _(student, teacher, lengths, student_temperature, teacher_temperature, reduction):
    _check_rows(student, "student")
    torch._check(teacher.shape == student.shape, lambda: "teacher must have the shape of student")
    return _row_loss(student, reduction)


@_fake("listwise_kd_loss_backward")
def _(grad, student, teacher, lengths, student_temperature, teacher_temperature, reduction, teacher_grad):
    return torch.empty_like(student, memory_format=torch.contiguous_format), _grad_if(student, teacher_grad)


def _listwise_kd_setup(ctx, inputs, output):
    student, teacher, lengths, ts, tt, reduction = inputs
    ctx.temperatures, ctx.reduction = (ts, tt), reduction
    if _needs(ctx, 0, 1):
        ctx.save_for_backward(student, teacher, lengths)


def _listwise_kd_backward(ctx, grad):
    student, teacher, lengths = ctx.saved_tensors
    grad_student, grad_teacher = ctx.ops.listwise_kd_loss_backward.default(
        grad, student, teacher, lengths, *ctx.temperatures, ctx.reduction, ctx.needs_input_grad[1]
    )
    return (
        grad_student if ctx.needs_input_grad[0] else None,
        grad_teacher if ctx.needs_input_grad[1] else None,
        None,
        None,
        None,
        None,
    )


_autograd("listwise_kd_loss", _listwise_kd_backward, _listwise_kd_setup)
_no_double_backward("listwise_kd_loss_backward")


# --- registration, once per namespace ----------------------------------------------------------


def _refuse_double_backward(name: str):
    def backward(ctx, *grads):
        raise RuntimeError(f"{name} is a backward op: double backward is not supported")

    return backward


def _with_ops(setup_context, ops):
    def setup(ctx, inputs, output):
        ctx.ops = ops
        setup_context(ctx, inputs, output)

    return setup


for _namespace in NAMESPACES:
    _ops = getattr(torch.ops, _namespace)
    for _op, _fn in _FAKES.items():
        torch.library.register_fake(f"{_namespace}::{_op}", _fn)
    for _op, (_backward, _setup) in _AUTOGRAD.items():
        torch.library.register_autograd(f"{_namespace}::{_op}", _backward, setup_context=_with_ops(_setup, _ops))
    for _op in _BACKWARD_OPS:
        torch.library.register_autograd(f"{_namespace}::{_op}", _refuse_double_backward(f"{_namespace}::{_op}"))
