// The handle of an op of this library by name, for code that calls one op from another (the
// autograd kernels, the tensor_temperature overloads' kernels): through the dispatcher of this
// library's namespace (KDOPS_NS), so the same source serves the kdops library and any other built
// with another -DKDOPS_NS.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <string>

#include "common/macros.h"

namespace kdops {

// Op `name` (overload `overload`, "" for the default) of this library, typed by its C++
// signature. Looked up once per call site (a function-local static at the caller), so the
// per-call cost is a plain call.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name, const char* overload = "") {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string(KDOPS_NS_STR "::") + name).c_str(), overload)
      .typed<Signature>();
}

}  // namespace kdops
