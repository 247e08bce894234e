// include/gc_api.def is the one list of the C API: gpu_core.h declares it, gen-ffi.ts writes
// ffi.ts from it. ffi.ts must be what the generator writes now, and every function of the list
// must be exported by each built backend library (the compiler already refuses a definition whose
// signature differs from its entry, and one without an entry: -Werror=missing-prototypes).
import { dlopen } from "bun:ffi";
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { symbols } from "../../gpu-core/ffi.ts";
import { DEF_PATH, FFI_PATH, generateFfi, parseApi, renderFfi } from "../../gpu-core/gen-ffi.ts";
import { type Backend, backendAvailable, libraryPath } from "../../gpu-core/index.ts";

const api = parseApi(readFileSync(DEF_PATH, "utf8"));

test("ffi.ts is what gen-ffi.ts writes from gc_api.def", () => {
  expect(api.length).toBeGreaterThan(50);
  expect(readFileSync(FFI_PATH, "utf8"), "gpu-core/ffi.ts is stale: run `bun run gpu-core/gen-ffi.ts`").toBe(
    generateFfi(),
  );
  expect(Object.keys(symbols)).toEqual(api.map((f) => f.name));
});

describe("every function of the list resolves in the built library", () => {
  for (const backend of ["cpu", "cuda"] as Backend[]) {
    test.skipIf(backend === "cuda" && !backendAvailable("cuda"))(backend, () => {
      const path = libraryPath(backend);
      const resolves = (name: keyof typeof symbols): boolean => {
        try {
          const lib = dlopen(path, { [name]: symbols[name] });
          const found = typeof lib.symbols[name] === "function";
          lib.close();
          return found;
        } catch {
          return false;
        }
      };
      // The whole table at once (dlopen fails on the first missing symbol); then, on failure, one
      // by one, so that every missing function is named.
      let missing: string[] = [];
      try {
        dlopen(path, symbols).close();
      } catch {
        missing = api.map((f) => f.name).filter((name) => !resolves(name as keyof typeof symbols));
      }
      expect(missing).toEqual([]);
    });
  }
});

describe("the generator reads only what it can map", () => {
  const entry = (params: string, returns = "gc_status") => `/* ---- s ---- */\nGC_API(${returns}, gc_x, (${params}))`;

  test("C types map to bun:ffi types and the Engine's parameter types", () => {
    const text = renderFfi(
      parseApi(entry("gc_handle ctx, gc_handle y_out, const double *alpha_t, float eta, uint64_t seed")),
    );
    expect(text).toContain("gc_x: { args: [H, H, ptr, f32, u64], returns: i32 },");
    expect(text).toContain("gc_x: [yOut: T, alphaT: Float64Array, eta: number, seed: bigint];");
    expect(renderFfi(parseApi(entry("void", "const char *")))).toContain("gc_x: { args: [], returns: cstring },");
  });

  test("an unknown type, an unreadable parameter or stray text is an error", () => {
    expect(() => renderFfi(parseApi(entry("gc_handle ctx, size_t n")))).toThrow(
      "gc_x(n) has type 'size_t', which gen-ffi.ts does not map",
    );
    expect(() => parseApi(entry("gc_handle ctx, int64_t dims[6]"))).toThrow(
      "cannot read the parameter 'int64_t dims[6]'",
    );
    expect(() => parseApi(`${entry("gc_handle ctx")}\ngc_status gc_y(gc_handle ctx);`)).toThrow(
      "gc_api.def:3: expected a GC_API(returns, name, (params)) entry, got 'gc_status'",
    );
  });
});
