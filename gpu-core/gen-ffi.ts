// Writes gpu-core/ffi.ts from include/gc_api.def, the one list of the C API:
//   bun run gpu-core/gen-ffi.ts
// test/gpu-core/ffi.test.ts regenerates it in memory and fails when the committed file differs.
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";

export const DEF_PATH = join(import.meta.dir, "include/gc_api.def");
export const FFI_PATH = join(import.meta.dir, "ffi.ts");
const ROOT = resolve(import.meta.dir, "..");

export interface CParam {
  name: string;
  /** Normalised C type: single spaces, pointers as "T *" ("const double *"). */
  type: string;
}

export interface ApiFunction {
  name: string;
  returns: string;
  params: CParam[];
  /** The section header ("layers") the entry follows, on the first entry of a section only. */
  section?: string;
}

// Value types by C type. gc_handle is an i64 below 2^53 (a JS number); enums travel as i32.
const FFI_VALUE: Record<string, string> = {
  gc_handle: "H",
  gc_status: "i32",
  gc_dtype: "i32",
  gc_activation: "i32",
  int32_t: "i32",
  int64_t: "i64",
  uint64_t: "u64",
  float: "f32",
  double: "f64",
};

// The TypeScript type the Engine passes for a C parameter (T: a tensor for a gc_handle).
const TS_VALUE: Record<string, string> = {
  gc_handle: "T",
  gc_dtype: "number",
  gc_activation: "number",
  int32_t: "number",
  int64_t: "number",
  uint64_t: "bigint",
  float: "number",
  double: "number",
};
const TS_POINTER: Record<string, string> = {
  double: "Float64Array",
  int64_t: "BigInt64Array",
  gc_handle: "BigInt64Array",
  int32_t: "Int32Array",
  void: "ArrayBufferView",
  char: "Uint8Array",
};

const normaliseType = (t: string) =>
  t
    .replace(/\s+/g, " ")
    .replace(/\s*\*\s*/g, " *")
    .trim();
const pointee = (t: string) => t.replace(/^const /, "").replace(/ \*$/, "");
const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function ffiType(fn: string, p: CParam): string {
  if (p.type.endsWith("*")) return "ptr";
  const t = FFI_VALUE[p.type];
  if (!t) throw new Error(`gc_api.def: ${fn}(${p.name}) has type '${p.type}', which gen-ffi.ts does not map`);
  return t;
}

function ffiReturn(fn: string, type: string): string {
  if (type === "const char *") return "cstring";
  const t = type.endsWith("*") ? undefined : FFI_VALUE[type];
  if (!t || t === "H") throw new Error(`gc_api.def: ${fn} returns '${type}', which gen-ffi.ts does not map`);
  return t;
}

function tsType(fn: string, p: CParam): string {
  const t = p.type.endsWith("*") ? TS_POINTER[pointee(p.type)] : TS_VALUE[p.type];
  if (!t) throw new Error(`gc_api.def: ${fn}(${p.name}) has type '${p.type}', which gen-ffi.ts does not map`);
  return t;
}

/** The GC_API entries of gc_api.def in order; anything else but comments is an error. */
export function parseApi(def: string): ApiFunction[] {
  const fns: ApiFunction[] = [];
  let section: string | undefined;
  const token = /\/\*[\s\S]*?\*\/|GC_API\(\s*([^,()]+?)\s*,\s*(\w+)\s*,\s*\(([^()]*)\)\s*\)|\S+/g;
  for (const m of def.matchAll(token)) {
    const [text, returns, name, params] = m;
    if (text.startsWith("/*")) {
      const header = /^\/\* -+ (.+?) -+ \*\/$/.exec(text);
      if (header) section = header[1];
      continue;
    }
    if (!name || returns === undefined || params === undefined) {
      const line = def.slice(0, m.index).split("\n").length;
      throw new Error(`gc_api.def:${line}: expected a GC_API(returns, name, (params)) entry, got '${text}'`);
    }
    const list = params.replace(/\/\*[\s\S]*?\*\//g, "").trim();
    const parsed =
      list === "void"
        ? []
        : list.split(",").map((decl) => {
            const d = /^(.*?)\s*\b(\w+)$/.exec(decl.trim());
            if (!d?.[1]) throw new Error(`gc_api.def: ${name}: cannot read the parameter '${decl.trim()}'`);
            return { type: normaliseType(d[1]), name: d[2] as string };
          });
    fns.push({ name, returns: normaliseType(returns), params: parsed, section });
    section = undefined;
  }
  return fns;
}

/** Calls that take a context first and return a status: the Engine's ops. */
function takesContext(f: ApiFunction): boolean {
  return f.returns === "gc_status" && f.params[0]?.type === "gc_handle" && f.params[0]?.name === "ctx";
}

/** The text of ffi.ts for these functions, before formatting. */
export function renderFfi(fns: ApiFunction[]): string {
  const symbols = fns.map((f) => {
    const args = f.params.map((p) => ffiType(f.name, p)).join(", ");
    const line = `  ${f.name}: { args: [${args}], returns: ${ffiReturn(f.name, f.returns)} },`;
    return f.section ? `\n  // ${f.section}\n${line}` : line;
  });
  const calls = fns.filter(takesContext).map((f) => {
    const params = f.params.slice(1).map((p) => `${camel(p.name)}: ${tsType(f.name, p)}`);
    return `  ${f.name}: [${params.join(", ")}];`;
  });
  const used = new Set(["i64", ...(symbols.join("\n").match(/\b(i32|u64|f32|f64|ptr|cstring)\b/g) ?? [])]); // i64: H
  const ffiTypes = ["i32", "i64", "u64", "f32", "f64", "ptr", "cstring"].filter((t) => used.has(t));
  const def = relative(ROOT, DEF_PATH);
  return `// GENERATED from ${def} by gpu-core/gen-ffi.ts: do not edit. Regenerate with
// \`bun run gpu-core/gen-ffi.ts\` after changing the list (test/gpu-core/ffi.test.ts fails while
// this file is stale). The one bun:ffi symbol table of gpu-core: handles are int64 values below
// 2^53 passed as JS numbers; the ops return a gc_status (i32).
import { dlopen, FFIType } from "bun:ffi";

const { ${ffiTypes.join(", ")} } = FFIType;
const H = i64; // gc_handle

export const symbols = {
${symbols.join("\n").replace(/^\n/, "")}
} as const;

/**
 * The parameters after \`ctx\` of every call that takes a context first, named as in C, typed as
 * the Engine passes them: T for a gc_handle (a tensor, or none where the C API allows 0).
 */
export interface ContextCalls<T> {
${calls.join("\n")}
}

export type GpuCoreLibrary = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

export function openLibrary(path: string): { lib: GpuCoreLibrary; close: () => void } {
  const handle = dlopen(path, symbols);
  return { lib: handle.symbols, close: () => handle.close() };
}
`;
}

/** Formats TypeScript source with the repository's biome settings (as \`bun run format\` would). */
function format(source: string, path: string): string {
  const biome = join(ROOT, "node_modules/.bin/biome");
  const r = spawnSync(biome, ["format", `--stdin-file-path=${relative(ROOT, path)}`], {
    cwd: ROOT,
    input: source,
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`biome format failed: ${r.stderr}`);
  return r.stdout;
}

/** ffi.ts as the generator writes it from the current gc_api.def. */
export function generateFfi(): string {
  return format(renderFfi(parseApi(readFileSync(DEF_PATH, "utf8"))), FFI_PATH);
}

if (import.meta.main) {
  writeFileSync(FFI_PATH, generateFfi());
  console.log(`wrote ${relative(process.cwd(), FFI_PATH)}`);
}
