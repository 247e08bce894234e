// HTML as escaped-by-default tagged templates: every interpolated value is escaped unless it is
// already Html (prompts and run names are user text), plus the number formats every page shares.

export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

type Part = Html | string | number | boolean | null | undefined | readonly Part[];

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function render(part: Part): string {
  if (part === null || part === undefined || part === false) return "";
  if (part instanceof Html) return part.text;
  if (Array.isArray(part)) return part.map(render).join("");
  return escapeHtml(String(part));
}

export function html(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1]!;
  return new Html(out);
}

/** JSON for a <script type="application/json"> block: `<` escaped so no text can close the tag. */
export function jsonScript(id: string, value: unknown): Html {
  return new Html(
    `<script type="application/json" id="${escapeHtml(id)}">${JSON.stringify(value).replace(/</g, "\\u003c")}</script>`,
  );
}

/** Four significant digits (what the tables show), very small or large ones as 1.234e-5; "–" for a missing value. */
export function num(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e6)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

export function seconds(v: number | null | undefined): string {
  return v === null || v === undefined ? "–" : `${v.toFixed(2)} s`;
}

export function when(d: Date | string | null | undefined): string {
  if (!d) return "–";
  return new Date(d).toISOString().replace("T", " ").slice(0, 19);
}

/** A URL path from segments, each percent-encoded. */
export function path(...segments: Array<string | number>): string {
  return `/${segments.map((s) => encodeURIComponent(String(s))).join("/")}`;
}

export function query(params: Record<string, string | number | undefined | readonly string[]>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === "") continue;
    if (Array.isArray(v)) for (const x of v) q.append(k, x);
    else q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export function page(title: string, body: Html, options: { data?: unknown } = {}): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · ddpo</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/dashboard.css">
<script type="module" src="/assets/dashboard.js"></script>
</head><body>
<header><a class="brand" href="/">ddpo dashboard</a><nav><a href="/">runs</a> <a href="/compare">compare</a></nav></header>
<main>${body.text}</main>
${options.data === undefined ? "" : jsonScript("page-data", options.data).text}
</body></html>`;
}
