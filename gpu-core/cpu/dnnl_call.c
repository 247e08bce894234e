/* Shared oneDNN plumbing for the CPU backend's oneDNN ops (see dnnl_call.h). */
#include "dnnl_call.h"
#include "scratch.h"

#include <oneapi/dnnl/dnnl_debug.h>
#include <pthread.h>
#include <string.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t g_engine;

gc_status dnnl_engine_get(dnnl_engine_t *engine) {
  pthread_mutex_lock(&g_lock);
  if (!g_engine) {
    const dnnl_version_t *v = dnnl_version();
    if (v->cpu_runtime != DNNL_RUNTIME_OMP) {
      pthread_mutex_unlock(&g_lock);
      return gc_set_error(GC_ERR_BACKEND,
                          "the oneDNN library loaded (%d.%d.%d) runs on CPU runtime %u, not OpenMP: "
                          "it would not share the backend's threads",
                          v->major, v->minor, v->patch, v->cpu_runtime);
    }
    dnnl_status_t s = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
    if (s != dnnl_success) {
      g_engine = NULL;
      pthread_mutex_unlock(&g_lock);
      return dnnl_fail(s, "engine creation", "the CPU engine");
    }
  }
  *engine = g_engine;
  pthread_mutex_unlock(&g_lock);
  return GC_OK;
}

dnnl_status_t dnnl_attr_create(dnnl_primitive_attr_t *attr) {
  dnnl_status_t s = dnnl_primitive_attr_create(attr);
  if (s == dnnl_success) s = dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
  if (s != dnnl_success && *attr) {
    dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
  }
  return s;
}

gc_status dnnl_fail(dnnl_status_t s, const char *what, const char *op) {
  gc_status st = s == dnnl_out_of_memory   ? GC_ERR_OUT_OF_MEMORY
                 : s == dnnl_unimplemented ? GC_ERR_UNSUPPORTED
                                           : GC_ERR_BACKEND;
  return gc_set_error(st, "oneDNN %s failed (%s) for %s", what, dnnl_status2str(s), op);
}

size_t dnnl_scratchpad(dnnl_primitive_t p) {
  const_dnnl_primitive_desc_t pd;
  if (!p || dnnl_primitive_get_primitive_desc(p, &pd) != dnnl_success) return 0;
  const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  return md ? dnnl_memory_desc_get_size(md) : 0;
}

gc_status dnnl_call_begin(dnnl_call *c, dnnl_engine_t engine, size_t lib_bytes, size_t pad_bytes,
                          const char *op) {
  memset(c, 0, sizeof *c);
  c->engine = engine;
  const size_t need = lib_bytes + dnnl_al64(pad_bytes);
  char *buf = cpu_scratch_dnnl(need);
  if (!buf)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes of oneDNN buffers", op, need);
  c->buf = buf;
  c->pad = buf + lib_bytes;
  c->what = "stream creation";
  c->s = dnnl_stream_create(&c->stream, engine, dnnl_stream_default_flags);
  return c->s == dnnl_success ? GC_OK : dnnl_fail(c->s, c->what, op);
}

dnnl_memory_t dnnl_call_mem(dnnl_call *c, const dnnl_memory_desc_t *md, const void *ptr) {
  dnnl_memory_t m = NULL;
  if (c->s != dnnl_success) return NULL;
  c->what = "memory creation";
  if (c->nmems == (int)(sizeof c->mems / sizeof c->mems[0])) {
    c->s = dnnl_out_of_memory;
    return NULL;
  }
  c->s = dnnl_memory_create(&m, md, c->engine, (void *)ptr);
  if (c->s == dnnl_success) c->mems[c->nmems++] = m;
  return m;
}

void *dnnl_call_take(dnnl_call *c, size_t bytes) {
  void *p = c->buf + c->used;
  c->used += dnnl_al64(bytes);
  return p;
}

void dnnl_call_exec(dnnl_call *c, dnnl_primitive_t p, int n, dnnl_exec_arg_t *args, const char *what) {
  if (c->s != dnnl_success) return;
  const_dnnl_primitive_desc_t pd;
  c->what = what;
  c->s = dnnl_primitive_get_primitive_desc(p, &pd);
  if (c->s != dnnl_success) return;
  const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  if (smd && dnnl_memory_desc_get_size(smd)) {
    args[n].arg = DNNL_ARG_SCRATCHPAD;
    args[n++].memory = dnnl_call_mem(c, smd, c->pad);
    if (c->s != dnnl_success) return;
  }
  c->what = what;
  c->s = dnnl_primitive_execute(p, c->stream, n, args);
}

gc_status dnnl_call_end(dnnl_call *c, const char *op) {
  for (int i = 0; i < c->nmems; i++) dnnl_memory_destroy(c->mems[i]);
  if (c->stream) dnnl_stream_destroy(c->stream);
  return c->s == dnnl_success ? GC_OK : dnnl_fail(c->s, c->what, op);
}
