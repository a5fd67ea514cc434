"""Loads kdops._C (which defines torch.ops.kdops.*, their kernels and their autograd formulas,
csrc/autograd/) and registers, for each op, the fake kernel used by torch.compile. The backward
of every op is an op of its own (``<op>_backward``), so compiled graphs keep it fused too;
double backward is not supported and says so. ``listmle_and_grads``, ``pld_loss_and_grads`` and
``listwise_kd_loss_and_grads`` are the loss and its gradients at an upstream gradient of 1 in
one pass, which the autograd forward runs when an input requires grad (the backward then scales
them). pld_loss and listwise_kd_loss and their backward ops have a ``tensor_temperature``
overload taking the temperatures as 0-dim tensors (which may require grad).

When kdops._C_sim was built (``KDOPS_SIM=1``: the CUDA kernels run on CPU tensors by the
project's CUDA simulator, for tests), its ops torch.ops.kdops_sim.* get the same fake kernels:
every fake kernel below is registered once per namespace in NAMESPACES (autograd comes with
each library, from csrc/autograd)."""

from __future__ import annotations

import importlib.util
import os

import torch

from kdops import _version

from kdops import _fake_checks as check
from kdops._load import installed_version, load_extension

_C = load_extension()

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


def arch_verdict(capability: tuple[int, int], archs: list[str]) -> str:
    """Whether kdops' CUDA kernels run on a GPU of this compute capability, given the archs
    built (as _arch_names gives them): machine code for it (or for an earlier minor of its major,
    which the driver runs as is), PTX of an arch not newer than it (compiled by the driver on
    first use), or nothing."""
    major, minor = capability
    cc = major * 10 + minor
    sass = sorted(int(a[3:]) for a in archs if a.startswith("sm_"))
    ptx = sorted(int(a[8:]) for a in archs if a.startswith("compute_"))
    if cc in sass:
        return f"ok: machine code for sm_{cc}"
    same_major = [a for a in sass if a // 10 == major and a < cc]
    if same_major:
        return f"ok: machine code for sm_{same_major[-1]} runs on sm_{cc}"
    usable_ptx = [a for a in ptx if a <= cc]
    if usable_ptx:
        return f"ok: PTX of compute_{usable_ptx[-1]}, compiled by the driver on first use (slow first call)"
    if not sass and not ptx:
        return "no CUDA kernels: this kdops is a CPU-only build"
    return f"NO KERNEL for sm_{cc}: rebuild with TORCH_CUDA_ARCH_LIST={major}.{minor}"


def _gpu_verdict(index: int, archs: list[str]) -> dict:
    capability = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "capability": f"{capability[0]}.{capability[1]}",
            "verdict": arch_verdict(capability, archs)}


def build_info() -> dict:
    """How kdops was built and what it can run here: kdops' version and path (and the installed
    distribution's version, whose local tag names the torch and CUDA of its build), the torch it
    was built against and the one running, the CUDA compiler and archs of its device code, each
    visible GPU with whether kdops has a kernel for it, the CPU instruction set its vectorised
    kernels use, whether the simulated CUDA kernels (kdops._C_sim) were built, and the backends
    with a kernel for every kdops op ("sim": torch.ops.kdops_sim)."""
    build = _C.build_info()
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("kdops::"))

    def backends(name: str) -> list[str]:
        sim = _C_sim is not None and "CPU" in _op_backends(name.replace("kdops::", "kdops_sim::", 1))
        return _op_backends(name) + (["sim"] if sim else [])

    return {
        "kdops": _version.__version__,
        "kdops_installed": installed_version(),
        "path": os.path.dirname(os.path.abspath(__file__)),
        "torch": torch.__version__,
        "torch_built": str(build["torch"]),
        "torch_cuda": torch.version.cuda,
        "nvcc": str(build["nvcc"]) or None,
        "cuda_kernels": bool(build["cuda"]),
        "cuda_archs": _arch_names(str(build["cuda_archs"])),
        "cuda_available": torch.cuda.is_available(),
        "gpus": [_gpu_verdict(i, _arch_names(str(build["cuda_archs"]))) for i in range(torch.cuda.device_count())],
        "cpu_isa": _C.cpu_isa(),
        "simulator": _C_sim is not None,
        "ops": {name.removeprefix("kdops::"): backends(name) for name in names},
    }


# --- Margin-MSE -------------------------------------------------------------------------------


def _margin_mse_args(student, teacher, mask, reduction):
    check.floating(student, "student")
    check.dim(student, 2, "student", "[B, 1+N] (column 0 the positive)")
    torch._check_value(student.shape[1] >= 2, lambda: f"student must be [B, 1+N] with N >= 1, got {list(student.shape)}")
    check.like(teacher, student, "teacher", "student")
    check.mask(mask, "mask")
    check.shape(mask, student.shape, "mask", "the shape of student")
    check.device(student, "student", mask=mask)
    check.reduction(reduction)


@_fake("margin_mse")
def _(student, teacher, mask, reduction):
    _margin_mse_args(student, teacher, mask, reduction)
    b, n = student.shape[0], student.shape[1] - 1
    loss = student.new_empty((b, n) if reduction == "none" else ())
    return loss, student.new_empty((), dtype=torch.int64)


@_fake("margin_mse_backward")
def _(grad, student, teacher, mask, count, reduction):
    _margin_mse_args(student, teacher, mask, reduction)
    torch._check_type(grad.dtype == student.dtype, lambda: f"grad must have the dtype of student ({student.dtype}), got {grad.dtype}")
    loss_shape = () if reduction != "none" else (student.shape[0], student.shape[1] - 1)
    torch._check_value(tuple(grad.shape) == loss_shape,
                       lambda: f"grad must be the shape of the loss {list(loss_shape)}, got {list(grad.shape)}")
    check.dtype(count, torch.int64, "count")
    check.shape(count, (), "count", "the scalar margin_mse returned")
    check.device(student, "student", grad=grad, count=count)
    return torch.empty_like(student, memory_format=torch.contiguous_format)


def _pairwise_args(student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    check.floating(student_pos, "student_pos")
    check.dim(student_pos, 1, "student_pos", "[B]")
    check.like(student_neg, student_pos, "student_neg", "student_pos")
    check.like(teacher_pos, student_pos, "teacher_pos", "student_pos")
    check.like(teacher_neg, student_pos, "teacher_neg", "student_pos")
    check.reduction(reduction)


@_fake("margin_mse_pairwise")
def _(student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    _pairwise_args(student_pos, student_neg, teacher_pos, teacher_neg, reduction)
    return student_pos.new_empty(student_pos.shape if reduction == "none" else ())


@_fake("margin_mse_pairwise_backward")
def _(grad, student_pos, student_neg, teacher_pos, teacher_neg, reduction):
    _pairwise_args(student_pos, student_neg, teacher_pos, teacher_neg, reduction)
    check.row_loss_grad(grad, student_pos, reduction != "none")
    return torch.empty_like(student_pos), torch.empty_like(student_neg)


# --- MaxSim -----------------------------------------------------------------------------------


def _maxsim_columns(Q, D, q_mask, doc_offsets) -> int:
    """Checks Q, D, q_mask and doc_offsets as maxsim_args (csrc/common/maxsim_inputs.h) does;
    returns the number of output columns."""
    check.floating(Q, "Q")
    check.dim(Q, 3, "Q", "[Nq, Lq, d]")
    torch._check_type(D.dtype == Q.dtype, lambda: f"D must have the dtype of Q ({Q.dtype}), got {D.dtype}")
    check.device(Q, "Q", D=D, q_mask=q_mask, doc_offsets=doc_offsets)
    check.mask(q_mask, "q_mask")
    check.shape(q_mask, Q.shape[:2], "q_mask", "[Nq, Lq]")
    torch._check_value(D.shape[-1] == Q.shape[-1] if D.dim() > 0 else False,
                       lambda: f"D must have the embedding size d = {Q.shape[-1]} of Q in its last dimension, got shape {list(D.shape)}")
    if doc_offsets is not None:
        check.dim(D, 2, "D_tokens", "[T, d] when doc_offsets is given")
        check.dtype(doc_offsets, torch.int64, "doc_offsets")
        check.dim(doc_offsets, 1, "doc_offsets", "[Nd + 1]")
        torch._check_value(doc_offsets.shape[0] >= 1, lambda: "doc_offsets must hold at least one entry (0), got none")
        return doc_offsets.shape[0] - 1
    torch._check_value(D.dim() in (3, 4), lambda: f"D must be [Nd, Ld, d] (all pairs) or [Nq, K, Ld, d] (per-query candidates), or [T, d] with doc_offsets; got shape {list(D.shape)}")
    if D.dim() == 4:
        torch._check_value(D.shape[0] == Q.shape[0],
                           lambda: f"D must be [Nq, K, Ld, d] with Nq = {Q.shape[0]} (Q.shape[0]), got shape {list(D.shape)}")
        return D.shape[1]
    return D.shape[0]


def _maxsim_score_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@_fake("maxsim")
def _(Q, D, q_mask, d_mask, doc_offsets, length_normalize, with_argmax=True):
    columns = _maxsim_columns(Q, D, q_mask, doc_offsets)
    torch._check_value(d_mask is None or doc_offsets is None,
                       lambda: "d_mask is not accepted with doc_offsets: packed docs hold only real tokens")
    check.mask(d_mask, "d_mask")
    check.shape(d_mask, D.shape[:-1], "d_mask", "D.shape[:-1]")
    check.device(Q, "Q", d_mask=d_mask)
    nq, lq = Q.shape[0], Q.shape[1]
    scores = Q.new_empty((nq, columns), dtype=_maxsim_score_dtype(Q.dtype))
    argmax_shape = (nq, columns, lq) if with_argmax else (0,)  # [0]: the caller wants no argmax
    return scores, Q.new_empty(argmax_shape, dtype=torch.int32)


@_fake("maxsim_backward")
def _(grad, argmax, Q, D, q_mask, doc_offsets, length_normalize, grad_Q, grad_D):
    columns = _maxsim_columns(Q, D, q_mask, doc_offsets)
    nq, lq = Q.shape[0], Q.shape[1]
    check.shape(grad, (nq, columns), "grad", "the scores' shape [Nq, K]")
    check.dtype(grad, _maxsim_score_dtype(Q.dtype), "grad")
    check.shape(argmax, (nq, columns, lq), "argmax", "[Nq, K, Lq]")
    check.dtype(argmax, torch.int32, "argmax")
    check.device(Q, "Q", grad=grad, argmax=argmax)
    contiguous = torch.contiguous_format
    dQ = torch.empty_like(Q, memory_format=contiguous) if grad_Q else Q.new_empty(0)
    dD = torch.empty_like(D, memory_format=contiguous) if grad_D else D.new_empty(0)
    return dQ, dD


# --- MaxSim for serving (kdops.serving) ----------------------------------------------------

def _serving_outputs(Q, tokens, q_mask, d_mask, with_argmax):
    """Checks what maxsim_serving_inputs.h checks without values; the (scores, argmax) of docs
    whose per-token shape is `tokens` ([Nd, Ld] or [Nq, K, Ld])."""
    check.dim(Q, 3, "Q", "[Nq, Lq, d]")
    nq, lq = Q.shape[0], Q.shape[1]
    torch._check_value(len(tokens) in (2, 3), lambda: f"the docs must be [Nd, Ld, ...] or [Nq, K, Ld, ...], got per-token shape {list(tokens)}")
    torch._check_value(len(tokens) == 2 or tokens[0] == nq,
                       lambda: f"per-query candidates must be [Nq, K, Ld, ...] with Nq = {nq} (Q.shape[0]), got per-token shape {list(tokens)}")
    check.mask(q_mask, "q_mask")
    check.shape(q_mask, (nq, lq), "q_mask", "[Nq, Lq]")
    check.mask(d_mask, "d_mask")
    check.shape(d_mask, tokens, "d_mask", "the docs' [..., Ld]")
    check.device(Q, "Q", q_mask=q_mask, d_mask=d_mask)
    columns = tokens[-2]
    argmax_shape = (nq, columns, lq) if with_argmax else (0,)
    return Q.new_empty((nq, columns), dtype=torch.float32), Q.new_empty(argmax_shape, dtype=torch.int32)


@_fake("maxsim_quantized")
def _(Q, q_scale, D, d_scale, q_mask, d_mask, length_normalize, with_argmax=False):
    quantized = (torch.int8, torch.float8_e4m3fn)
    torch._check_type(D.dtype in quantized, lambda: f"D must be int8 or float8_e4m3fn (float docs: kdops.maxsim), got {D.dtype}")
    torch._check_type(Q.dtype in quantized + (torch.float32,),
                      lambda: f"Q must be float32, or int8 / float8_e4m3fn with q_scale, got {Q.dtype}")
    torch._check_value((q_scale is not None) == (Q.dtype in quantized),
                       lambda: "q_scale [Nq, Lq] is required with an int8 or float8_e4m3fn Q, and only then")
    check.dtype(d_scale, torch.float32, "d_scale")
    check.shape(d_scale, D.shape[:-1], "d_scale", "D.shape[:-1]")
    check.dtype(q_scale, torch.float32, "q_scale")
    check.shape(q_scale, Q.shape[:2], "q_scale", "[Nq, Lq]")
    torch._check_value(D.dim() > 0 and D.shape[-1] == Q.shape[-1],
                       lambda: f"D must have the embedding size d = {Q.shape[-1]} of Q in its last dimension, got shape {list(D.shape)}")
    check.device(Q, "Q", D=D, d_scale=d_scale, q_scale=q_scale)
    return _serving_outputs(Q, D.shape[:-1], q_mask, d_mask, with_argmax)


@_fake("maxsim_residual")
def _(Q, codes, residuals, centroids, bucket_weights, q_mask, d_mask, length_normalize, with_argmax=False):
    torch._check_type(Q.dtype == torch.float32, lambda: f"Q must be float32, got {Q.dtype}")
    torch._check_type(codes.dtype in (torch.int32, torch.int64), lambda: f"codes must be int32 or int64 (centroid ids), got {codes.dtype}")
    check.dtype(residuals, torch.uint8, "residuals")
    check.dtype(centroids, torch.float32, "centroids")
    check.dtype(bucket_weights, torch.float32, "bucket_weights")
    check.dim(centroids, 2, "centroids", "[C, d]")
    torch._check_value(residuals.shape[:-1] == codes.shape if residuals.dim() > 0 else False,
                       lambda: f"residuals must be codes.shape + [d * nbits / 8] = {list(codes.shape)} + [...], got {list(residuals.shape)}")
    check.shape(centroids, (centroids.shape[0], Q.shape[-1]), "centroids", "[C, d] with Q's d")
    dim, packed = Q.shape[-1], residuals.shape[-1]
    torch._check_value(packed * 8 in (dim, 2 * dim, 4 * dim),
                       lambda: f"residuals' last dimension must be d * nbits / 8 with nbits 1, 2 or 4 (d = {dim}), got {packed}")
    check.shape(bucket_weights, (2 ** (packed * 8 // dim),), "bucket_weights", "[2^nbits]")
    check.device(Q, "Q", codes=codes, residuals=residuals, centroids=centroids, bucket_weights=bucket_weights)
    return _serving_outputs(Q, codes.shape, q_mask, d_mask, with_argmax)


# --- Plackett-Luce family ---------------------------------------------------------------------


def _check_rows(scores, name, lengths=None, top_k=None):
    check.floating(scores, name)
    check.dim(scores, 2, name, "[B, n]")
    check.integer(lengths, "lengths")
    check.shape(lengths, scores.shape[:1], "lengths", "[B]")
    check.device(scores, name, lengths=lengths)
    torch._check_value(top_k is None or top_k >= 1, lambda: f"top_k must be at least 1, got {top_k}")


def _row_loss(scores, reduction):
    check.reduction(reduction)
    return scores.new_empty((scores.shape[0],) if reduction == "none" else ())


def _grad_if(scores, wanted):
    """The second gradient of a *_backward op: [B, n], or empty [0, n] when not asked for."""
    return scores.new_empty((scores.shape[0] if wanted else 0, scores.shape[1]))


@_fake("plackett_luce_loss")
def _(scores, ranking, weights, lengths, top_k, reduction):
    _plackett_luce_args(scores, ranking, weights, lengths, top_k)
    return _row_loss(scores, reduction)


def _plackett_luce_args(scores, ranking, weights, lengths, top_k):
    _check_rows(scores, "scores", lengths, top_k)
    _ranking_arg(ranking, scores, "scores")
    check.like(weights, scores, "weights", "scores")


def _ranking_arg(ranking, scores, scores_name):
    check.dtype(ranking, torch.int64, "ranking")
    check.shape(ranking, scores.shape, "ranking", f"the shape of {scores_name}")
    check.device(scores, scores_name, ranking=ranking)


@_fake("plackett_luce_loss_backward")
def _(grad, scores, ranking, weights, lengths, top_k, reduction, weights_grad):
    _plackett_luce_args(scores, ranking, weights, lengths, top_k)
    check.reduction(reduction)
    check.row_loss_grad(grad, scores, reduction != "none")
    torch._check_value(not weights_grad or weights is not None, lambda: "weights_grad needs weights")
    return torch.empty_like(scores, memory_format=torch.contiguous_format), _grad_if(scores, weights_grad)


@_fake("listmle")
def _(scores, relevance, lengths, top_k, reduction):
    _check_rows(scores, "scores", lengths, top_k)
    torch._check_type(not relevance.dtype.is_complex and relevance.dtype != torch.bool,
                      lambda: f"relevance must be a real tensor, got {relevance.dtype}")
    check.shape(relevance, scores.shape, "relevance", "the shape of scores")
    check.device(scores, "scores", relevance=relevance)
    return _row_loss(scores, reduction), scores.new_empty(scores.shape, dtype=torch.int64)


def _pld_args(student_logits, teacher_logits, temperature):
    _check_rows(student_logits, "student_logits")
    torch._check_value(student_logits.shape[1] >= 1,
                       lambda: f"student_logits must hold at least one class, got shape {list(student_logits.shape)}")
    check.like(teacher_logits, student_logits, "teacher_logits", "student_logits")
    check.positive(temperature, "temperature")


@_fake("pld_loss")
def _(student_logits, teacher_logits, target, temperature, reduction):
    _pld_args(student_logits, teacher_logits, temperature)
    check.integer(target, "target")
    check.shape(target, student_logits.shape[:1], "target", "[B]")
    check.device(student_logits, "student_logits", target=target)
    return _row_loss(student_logits, reduction), student_logits.new_empty(student_logits.shape, dtype=torch.int64)


@_fake("pld_loss_backward")
def _(grad, student_logits, teacher_logits, ranking, temperature, reduction, teacher_grad):
    _pld_args(student_logits, teacher_logits, temperature)
    _ranking_arg(ranking, student_logits, "student_logits")
    check.reduction(reduction)
    check.row_loss_grad(grad, student_logits, reduction != "none")
    return (
        torch.empty_like(student_logits, memory_format=torch.contiguous_format),
        _grad_if(student_logits, teacher_grad),
    )


@_fake("listwise_kd_loss")
def _(student, teacher, lengths, student_temperature, teacher_temperature, reduction):
    _listwise_kd_args(student, teacher, lengths, student_temperature, teacher_temperature)
    return _row_loss(student, reduction)


def _listwise_kd_args(student, teacher, lengths, student_temperature, teacher_temperature):
    _check_rows(student, "student", lengths)
    check.like(teacher, student, "teacher", "student")
    check.positive(student_temperature, "student_temperature")
    check.positive(teacher_temperature, "teacher_temperature")


@_fake("listwise_kd_loss_backward")
def _(grad, student, teacher, lengths, student_temperature, teacher_temperature, reduction, teacher_grad):
    _listwise_kd_args(student, teacher, lengths, student_temperature, teacher_temperature)
    check.reduction(reduction)
    check.row_loss_grad(grad, student, reduction != "none")
    return torch.empty_like(student, memory_format=torch.contiguous_format), _grad_if(student, teacher_grad)


@_fake("listmle_and_grads")
def _(scores, relevance, lengths, top_k, reduction):
    loss, ranking = _FAKES["listmle"](scores, relevance, lengths, top_k, reduction)
    return loss, ranking, torch.empty_like(scores, memory_format=torch.contiguous_format)


@_fake("pld_loss_and_grads")
def _(student_logits, teacher_logits, target, temperature, reduction, teacher_grad):
    loss, ranking = _FAKES["pld_loss"](student_logits, teacher_logits, target, temperature, reduction)
    return loss, ranking, torch.empty_like(student_logits, memory_format=torch.contiguous_format), _grad_if(
        student_logits, teacher_grad)


@_fake("listwise_kd_loss_and_grads")
def _(student, teacher, lengths, student_temperature, teacher_temperature, reduction, teacher_grad):
    _listwise_kd_args(student, teacher, lengths, student_temperature, teacher_temperature)
    return (
        _row_loss(student, reduction),
        torch.empty_like(student, memory_format=torch.contiguous_format),
        _grad_if(student, teacher_grad),
    )


# The tensor_temperature overloads: the float op's outputs (and, for *_and_grads, the
# temperatures' gradients), once the temperature tensors pass their checks (their values are read
# only by the kernels).


@_fake("pld_loss.tensor_temperature")
def _(student_logits, teacher_logits, target, temperature, reduction):
    check.temperature_tensor(temperature, student_logits, "temperature")
    return _FAKES["pld_loss"](student_logits, teacher_logits, target, 1.0, reduction)


@_fake("pld_loss_backward.tensor_temperature")
def _(grad, student_logits, teacher_logits, ranking, temperature, reduction, teacher_grad):
    check.temperature_tensor(temperature, student_logits, "temperature")
    return _FAKES["pld_loss_backward"](grad, student_logits, teacher_logits, ranking, 1.0, reduction, teacher_grad)


def _temperature_grad(scores, reduction):
    """A temperature's gradient from a tensor_temperature *_and_grads op: at an upstream gradient
    of 1, in the accumulation dtype ([B] for 'none', else 0-dim)."""
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    return scores.new_empty((scores.shape[0],) if reduction == "none" else (), dtype=dtype)


@_fake("pld_loss_and_grads.tensor_temperature")
def _(student_logits, teacher_logits, target, temperature, reduction, teacher_grad):
    check.temperature_tensor(temperature, student_logits, "temperature")
    outputs = _FAKES["pld_loss_and_grads"](student_logits, teacher_logits, target, 1.0, reduction, teacher_grad)
    return (*outputs, _temperature_grad(student_logits, reduction))


def _temperature_tensors(student, student_temperature, teacher_temperature):
    check.temperature_tensor(student_temperature, student, "student_temperature")
    check.temperature_tensor(teacher_temperature, student, "teacher_temperature")


@_fake("listwise_kd_loss.tensor_temperature")
def _(student, teacher, lengths, student_temperature, teacher_temperature, reduction):
    _temperature_tensors(student, student_temperature, teacher_temperature)
    return _FAKES["listwise_kd_loss"](student, teacher, lengths, 1.0, 1.0, reduction)


@_fake("listwise_kd_loss_backward.tensor_temperature")
def _(grad, student, teacher, lengths, student_temperature, teacher_temperature, reduction, teacher_grad):
    _temperature_tensors(student, student_temperature, teacher_temperature)
    return _FAKES["listwise_kd_loss_backward"](grad, student, teacher, lengths, 1.0, 1.0, reduction, teacher_grad)


@_fake("listwise_kd_loss_and_grads.tensor_temperature")
def _(student, teacher, lengths, student_temperature, teacher_temperature, reduction, teacher_grad):
    _temperature_tensors(student, student_temperature, teacher_temperature)
    outputs = _FAKES["listwise_kd_loss_and_grads"](student, teacher, lengths, 1.0, 1.0, reduction, teacher_grad)
    return (*outputs, _temperature_grad(student, reduction), _temperature_grad(student, reduction))


for _namespace in NAMESPACES:
    for _op, _fn in _FAKES.items():
        torch.library.register_fake(f"{_namespace}::{_op}", _fn)
