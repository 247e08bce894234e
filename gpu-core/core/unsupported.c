/*
 * Weak defaults for every backend kernel (core/kernels.def): a backend that lacks an op reports it
 * as unsupported (ggml's supports_op) instead of failing to link. A backend's own definition
 * overrides these.
 */
#include "backend.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

#define GC_KERNEL(name, params)                                                                  \
  __attribute__((weak)) gc_status be_##name params {                                           \
    return gc_set_error(GC_ERR_UNSUPPORTED, "%s is not supported by the %s backend", #name,     \
                        be_name());                                                            \
  }
#include "kernels.def"
#undef GC_KERNEL
