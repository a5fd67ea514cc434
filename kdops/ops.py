"""Loads kdops._C (which defines torch.ops.kdops.*, their kernels and their autograd formulas,
csrc/autograd/) and registers, for each op, the fake kernel used by torch.compile. The backward
of every op is an op of its own (``<op>_backward``), so compiled graphs keep it fused too;
double backward is not supported and says so.

When kdops._C_sim was built (``KDOPS_SIM=1``: the CUDA kernels run on CPU tensors by the
project's CUDA simulator, for tests), its ops torch.ops.kdops_sim.* get the same fake kernels:
every fake kernel below is registered once per namespace in NAMESPACES (autograd comes with
each library, from csrc/autograd)."""

from __future__ import annotations

import importlib.util

import torch

from kdops import _C

# Not built unless asked for; when its file exists, an import error is a real error.
_C_sim = importlib.import_module("kdops._C_sim") if importlib.util.find_spec("kdops._C_sim") else None

__all__ = ["NAMESPACES", "build_info", "built_with_cuda", "built_with_simulator"]

NAMESPACES = ("kdops", "kdops_sim") if _C_sim is not None else ("kdops",)

_FAKES: dict = {}  # op name -> fake kernel, registered for every namespace at the end of the file


def _fake(op: str):
    def record(fn):
        _FAKES[op] = fn
        return fn

    return record

_BACKENDS = ("CPU", "CUDA")


def built_with_cuda() -> bool:
    """Whether kdops._C holds CUDA kernels (decided at build time, not by a visible GPU)."""
    return bool(_C.build_info()["cuda"])


def built_with_simulator() -> bool:
    """Whether kdops._C_sim (torch.ops.kdops_sim: the CUDA kernels on the simulator) was built."""
    return _C_sim is not None


def _op_backends(op: str) -> list[str]:
    return [key for key in _BACKENDS if torch._C._dispatch_has_kernel_for_dispatch_key(op, key)]


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
        "cuda_archs": str(build["cuda_archs"]),
        "cuda_available": torch.cuda.is_available(),
        "simulator": _C_sim is not None,
        "ops": {name.removeprefix("kdops::"): backends(name) for name in names},
    }


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


@_fake("listmle")
def _(scores, relevance, lengths, top_k, reduction):
    _check_rows(scores, "scores")
    torch._check(relevance.shape == scores.shape, lambda: "relevance must have the shape of scores")
    return _row_loss(scores, reduction), scores.new_empty(scores.shape, dtype=torch.int64)


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


@_fake("listwise_kd_loss")
def _(student, teacher, lengths, student_temperature, teacher_temperature, reduction):
    _check_rows(student, "student")
    torch._check(teacher.shape == student.shape, lambda: "teacher must have the shape of student")
    return _row_loss(student, reduction)


@_fake("listwise_kd_loss_backward")
def _(grad, student, teacher, lengths, student_temperature, teacher_temperature, reduction, teacher_grad):
    return torch.empty_like(student, memory_format=torch.contiguous_format), _grad_if(student, teacher_grad)


for _namespace in NAMESPACES:
    for _op, _fn in _FAKES.items():
        torch.library.register_fake(f"{_namespace}::{_op}", _fn)
