// Every kdops op schema, in one place. Kernels register per backend in csrc/cpu and csrc/cuda;
// autograd in csrc/autograd; fake (meta) kernels are registered from Python in kdops/ops.py. The
// same file also defines torch.ops.kdops_sim (KDOPS_NS) in kdops._C_sim: the CUDA kernels run by
// the CUDA simulator on CPU tensors, with exactly these schemas and the same autograd.
// pybind11 alone, not torch/extension.h: the module below binds no tensors, and the whole C++
// frontend that header pulls in tripled this file's compile time (in each of the four builds).
#include <pybind11/pybind11.h>
#include <torch/library.h>
#include <torch/version.h>

#include "common/macros.h"

#ifdef KDOPS_WITH_CUDA
namespace kdops::cuda {
const char* compiled_arch_list();  // csrc/cuda/build_info.cu
const char* compiler_version();    // csrc/cuda/build_info.cu
}  // namespace kdops::cuda
#endif
#ifndef KDOPS_SIM
#include "cpu/cpu_isa.h"
#else
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

namespace {
// kdops._C_sim's CPU tensors are the simulated device's memory: allocated with guard bytes
// (csrc/sim/guarded_heap.h), so that a kernel's write past a buffer fails its launch.
struct GuardedCpuAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t bytes) override {
    void* data = kdops::sim::guarded_allocate(bytes);
    return {data, data, &kdops::sim::guarded_free, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &kdops::sim::guarded_free; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};
GuardedCpuAllocator guarded_cpu_allocator;
}  // namespace
#endif

TORCH_LIBRARY(KDOPS_NS, m) {
  // Margin-MSE. The multi-negative form returns (loss, count): count is the number of valid
  // (unmasked) terms, the normaliser of reduction='mean', saved for backward.
  m.def("margin_mse(Tensor student, Tensor teacher, Tensor? mask, str reduction) -> (Tensor, Tensor)");
  m.def(
      "margin_mse_backward(Tensor grad, Tensor student, Tensor teacher, Tensor? mask, "
      "Tensor count, str reduction) -> Tensor");
  m.def(
      "margin_mse_pairwise(Tensor student_pos, Tensor student_neg, Tensor teacher_pos, "
      "Tensor teacher_neg, str reduction) -> Tensor");
  m.def(
      "margin_mse_pairwise_backward(Tensor grad, Tensor student_pos, Tensor student_neg, "
      "Tensor teacher_pos, Tensor teacher_neg, str reduction) -> (Tensor, Tensor)");

  // MaxSim (ColBERT). One op for the three layouts of D: [Nd, Ld, d] (all pairs), [Nq, K, Ld, d]
  // (per-query candidates), [T, d] with doc_offsets (packed). Returns (scores [Nq, K], argmax
  // [Nq, K, Lq] int32): the first maximal doc token of each query token, -1 where the query
  // token is masked or the doc has no valid token; backward needs nothing else. with_argmax =
  // false (inference) returns an empty int32 [0] in its place and the kernels write none (the
  // autograd kernel still computes it for itself when it records a backward). Backward
  // computes only the gradients asked for (grad_Q, grad_D); one not asked for comes back as an
  // empty [0] tensor.
  m.def(
      "maxsim(Tensor Q, Tensor D, Tensor? q_mask, Tensor? d_mask, Tensor? doc_offsets, "
      "bool length_normalize, bool with_argmax=True) -> (Tensor, Tensor)");
  m.def(
      "maxsim_backward(Tensor grad, Tensor argmax, Tensor Q, Tensor D, Tensor? q_mask, "
      "Tensor? doc_offsets, bool length_normalize, bool grad_Q, bool grad_D) -> (Tensor, Tensor)");
  // MaxSim for serving (inference only: the Autograd kernel refuses inputs that require grad).
  // Layouts of D as maxsim's padded ones: [Nd, Ld, d] (all pairs) or [Nq, K, Ld, d] (per query).
  // Scores are float32; argmax as maxsim's, an empty int32 [0] unless with_argmax.
  // maxsim_quantized: D int8 or float8_e4m3fn with a float32 scale per token (d_scale =
  // D.shape[:-1]); Q float32, or int8 / float8_e4m3fn with q_scale [Nq, Lq]. int8 x int8
  // accumulates exactly in int32; every other pair decodes tokens to float32 (x * scale) and
  // accumulates in float32 on the CPU, to fp16 on CUDA (csrc/cuda/maxsim_quantized_cuda.cpp).
  m.def(
      "maxsim_quantized(Tensor Q, Tensor? q_scale, Tensor D, Tensor d_scale, Tensor? q_mask, "
      "Tensor? d_mask, bool length_normalize, bool with_argmax=False) -> (Tensor, Tensor)");
  // maxsim_residual: docs in ColBERT/PLAID's residual format, decoded token by token:
  // normalize(centroids[code] + bucket_weights[n-bit residual codes]); codes (int32 or int64)
  // [Nd, Ld] or [Nq, K, Ld], residuals uint8 codes.shape + [d * nbits / 8] (nbits 1, 2 or 4),
  // centroids float32 [C, d], bucket_weights float32 [2^nbits]. Q float32.
  m.def(
      "maxsim_residual(Tensor Q, Tensor codes, Tensor residuals, Tensor centroids, "
      "Tensor bucket_weights, Tensor? q_mask, Tensor? d_mask, bool length_normalize, "
      "bool with_argmax=False) -> (Tensor, Tensor)");
  // Plackett-Luce family (listwise). listmle and pld_loss also return the ranking their sort
  // built (int64 [B, n]; padding columns hold their own index), saved for backward: listmle's
  // backward is plackett_luce_loss_backward with that ranking. The *_backward ops return an empty
  // tensor in place of a gradient that was not asked for (weights_grad / teacher_grad false).
  m.def(
      "plackett_luce_loss(Tensor scores, Tensor ranking, Tensor? weights, Tensor? lengths, "
      "int? top_k, str reduction) -> Tensor");
  m.def(
      "plackett_luce_loss_backward(Tensor grad, Tensor scores, Tensor ranking, Tensor? weights, "
      "Tensor? lengths, int? top_k, str reduction, bool weights_grad) -> (Tensor, Tensor)");
  m.def(
      "listmle(Tensor scores, Tensor relevance, Tensor? lengths, int? top_k, str reduction) "
      "-> (Tensor, Tensor)");
  // listmle, and the gradient plackett_luce_loss_backward gives on its ranking at an upstream
  // gradient of 1, from one pass (as listwise_kd_loss_and_grads below): loss, ranking, d scores.
  m.def(
      "listmle_and_grads(Tensor scores, Tensor relevance, Tensor? lengths, int? top_k, "
      "str reduction) -> (Tensor, Tensor, Tensor)");
  m.def(
      "pld_loss(Tensor student_logits, Tensor teacher_logits, Tensor target, float temperature, "
      "str reduction) -> (Tensor, Tensor)");
  m.def(
      "pld_loss_backward(Tensor grad, Tensor student_logits, Tensor teacher_logits, "
      "Tensor ranking, float temperature, str reduction, bool teacher_grad) -> (Tensor, Tensor)");
  // pld_loss, and the gradients pld_loss_backward gives at an upstream gradient of 1, from one
  // pass (as listwise_kd_loss_and_grads below): loss, ranking, d student, d teacher.
  m.def(
      "pld_loss_and_grads(Tensor student_logits, Tensor teacher_logits, Tensor target, "
      "float temperature, str reduction, bool teacher_grad) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "listwise_kd_loss(Tensor student, Tensor teacher, Tensor? lengths, "
      "float student_temperature, float teacher_temperature, str reduction) -> Tensor");
  m.def(
      "listwise_kd_loss_backward(Tensor grad, Tensor student, Tensor teacher, Tensor? lengths, "
      "float student_temperature, float teacher_temperature, str reduction, bool teacher_grad) "
      "-> (Tensor, Tensor)");
  // listwise_kd_loss and the gradients listwise_kd_loss_backward gives for an upstream gradient
  // of 1 (of each row's loss, for reduction "none"), from one pass over the rows: the Autograd
  // kernel's forward when an input requires grad, whose backward then only scales them. Both
  // need the same two softmaxes per row, the bulk of the work at n <= 64 (PLD: the teacher's
  // softmax and the scan).
  m.def(
      "listwise_kd_loss_and_grads(Tensor student, Tensor teacher, Tensor? lengths, "
      "float student_temperature, float teacher_temperature, str reduction, bool teacher_grad) "
      "-> (Tensor, Tensor, Tensor)");

  // The tensor_temperature overloads: each temperature a 0-dim floating tensor (on the CPU or on
  // the scores' device) instead of a float, so that it can require grad (a learned temperature,
  // CTKD). The CUDA kernels read it in device memory (no host sync), the CPU kernels
  // (csrc/tensor_temperature.cpp) read its value and run the float op. *_and_grads also returns
  // the temperatures' gradients at an upstream gradient of 1 (float32, or float64 for float64
  // scores; [B] for reduction 'none', else 0-dim): PLD's one, listwise KD's student's and
  // teacher's, computed by the CUDA kernels with the scores' gradients; their autograd
  // (csrc/autograd/plackett_luce_autograd.cpp) scales them by the upstream gradient.
  m.def(
      "pld_loss.tensor_temperature(Tensor student_logits, Tensor teacher_logits, Tensor target, "
      "Tensor temperature, str reduction) -> (Tensor, Tensor)");
  m.def(
      "pld_loss_backward.tensor_temperature(Tensor grad, Tensor student_logits, "
      "Tensor teacher_logits, Tensor ranking, Tensor temperature, str reduction, bool teacher_grad) "
      "-> (Tensor, Tensor)");
  m.def(
      "pld_loss_and_grads.tensor_temperature(Tensor student_logits, Tensor teacher_logits, "
      "Tensor target, Tensor temperature, str reduction, bool teacher_grad) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "listwise_kd_loss.tensor_temperature(Tensor student, Tensor teacher, Tensor? lengths, "
      "Tensor student_temperature, Tensor teacher_temperature, str reduction) -> Tensor");
  m.def(
      "listwise_kd_loss_backward.tensor_temperature(Tensor grad, Tensor student, Tensor teacher, "
      "Tensor? lengths, Tensor student_temperature, Tensor teacher_temperature, str reduction, "
      "bool teacher_grad) -> (Tensor, Tensor)");
  m.def(
      "listwise_kd_loss_and_grads.tensor_temperature(Tensor student, Tensor teacher, "
      "Tensor? lengths, Tensor student_temperature, Tensor teacher_temperature, str reduction, "
      "bool teacher_grad) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

// The Python module only reports how the library was built (and, in kdops._C_sim, sets the
// simulator's schedule and device); the ops live in torch.ops.kdops (torch.ops.kdops_sim).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def(
      "build_info",
      [] {
        pybind11::dict info;
        // The torch whose headers this library was compiled against: its C++ ABI is the one
        // the library links to, so kdops/__init__.py refuses another torch.
        info["torch"] = std::string(TORCH_VERSION);
        info["nvcc"] = std::string();
#if defined(KDOPS_SIM)
        info["cuda"] = false;
        info["cuda_archs"] = std::string();
        info["simulator"] = true;
#elif defined(KDOPS_WITH_CUDA)
        info["cuda"] = true;
        info["cuda_archs"] = std::string(kdops::cuda::compiled_arch_list());
        info["nvcc"] = std::string(kdops::cuda::compiler_version());
#else
        info["cuda"] = false;
        info["cuda_archs"] = std::string();
#endif
        return info;
      },
      "How kdops._C was built: {'torch': the torch version compiled against, 'cuda': bool, "
      "'cuda_archs': the device archs compiled in, 'nvcc': the CUDA compiler's version}.");
#ifndef KDOPS_SIM
  module.def(
      "cpu_isa", [] { return std::string(kdops::cpu::isa_name(kdops::cpu::cpu_isa())); },
      "The vector ISA the hand-vectorised CPU kernels run now (KDOPS_CPU_ISA or the CPU's widest).");
#endif
#ifdef KDOPS_SIM
  // Every CPU tensor allocated from now on, in this process (priority 1: above torch's default).
  // Not under ASan: its own redzones, around every allocation, see more than the guards.
#if !defined(__SANITIZE_ADDRESS__)
  c10::SetCPUAllocator(&guarded_cpu_allocator, 1);
#endif
  module.def(
      "set_schedule",
      [](uint64_t seed, const std::string& threads, bool shuffle_blocks, int pct_depth) {
        using kdops::sim::Schedule;
        const std::pair<const char*, Schedule> names[] = {{"in_order", Schedule::kInOrder},
                                                          {"random", Schedule::kRandom},
                                                          {"run_ahead", Schedule::kRunAhead},
                                                          {"round_robin", Schedule::kRoundRobin},
                                                          {"pct", Schedule::kPct}};
        kdops::sim::Options options;
        bool known = false;
        for (const auto& [name, schedule] : names) {
          if (threads == name) {
            options.threads = schedule;
            known = true;
          }
        }
        TORCH_CHECK_VALUE(known, "threads must be 'in_order', 'random', 'run_ahead', 'round_robin' or 'pct', got '",
                          threads, "'");
        TORCH_CHECK_VALUE(pct_depth >= 1, "pct_depth must be at least 1, got ", pct_depth);
        options.seed = seed;
        options.shuffle_blocks = shuffle_blocks;
        options.pct_depth = pct_depth;
        kdops::sim::set_options(options);
      },
      pybind11::arg("seed") = 0, pybind11::arg("threads") = "in_order", pybind11::arg("shuffle_blocks") = false,
      pybind11::arg("pct_depth") = 3,
      "The simulator's schedule for the following launches: how the next ready thread of a block is "
      "picked at every switch ('in_order', or seeded by `seed`: 'random', 'run_ahead' (a warp runs "
      "as far as it can), 'round_robin' (warps in turn), 'pct' (random warp priorities with "
      "pct_depth - 1 change points)), and whether the blocks of a grid run in a seeded order.");
  module.def(
      "set_device",
      [](const std::string& name) {
        TORCH_CHECK_VALUE(name == "h100" || name == "small",
                          "device must be 'h100' or 'small', got '", name, "'");
        kdops::sim::set_device(name == "h100" ? kdops::sim::h100() : kdops::sim::small_device());
      },
      pybind11::arg("name"),
      "The simulated device the launch code sees: 'h100' (132 SMs, 227 KiB opt-in shared "
      "memory per block, the default) or 'small' (2 SMs, 48 KiB).");
  module.def(
      "launch_count", [] { return kdops::sim::launch_count(); },
      "Kernel launches the simulator has run since the process started (a test takes the "
      "difference around a call to count its launches).");
#endif
}
