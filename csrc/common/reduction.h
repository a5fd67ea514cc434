// The `reduction` argument every loss takes, parsed once on the host.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

namespace kdops {

enum class Reduction { None, Mean, Sum };

inline Reduction parse_reduction(c10::string_view reduction) {
  if (reduction == "mean") return Reduction::Mean;
  if (reduction == "sum") return Reduction::Sum;
  if (reduction == "none") return Reduction::None;
  TORCH_CHECK_VALUE(false, "reduction must be 'mean', 'sum' or 'none', got '", reduction, "'");
}

}  // namespace kdops
