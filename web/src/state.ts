// What the page shows and runs, and its URL. The query keys: `config` (JSON: the keys set on top of
// the preset, or the whole config), `preset`, `workload`, `records`, `footprint`, `seed`, `view`; and
// `zipf`, `stride`, `write`, `vms`, `pages`, `seconds` (the CLI's workload flags), `trace` and
// `format` (a trace the site ships), `gva`, `kind`, `cpu`, `cold` (the Walk view), `run=1` (run on load).
import { parseConfigText } from "memvirt";

export const VIEWS = ["run", "see", "compare", "walk", "overcommit"] as const;
export type View = (typeof VIEWS)[number];

export interface PageState {
  view: View;
  preset: string;
  /** The config editor's text: keys set on top of the preset. */
  config: string;
  source: "workload" | "trace";
  workload: string;
  records: string;
  footprint: string;
  seed: string;
  zipf: string;
  stride: string;
  write: string;
  vms: string;
  pages: string;
  seconds: string;
  /** A trace the site ships (by file name). */
  trace: string;
  format: string;
  gva: string;
  kind: string;
  cpu: string;
  cold: boolean;
}

/** The CLI's defaults: a key the URL leaves out means what leaving out the flag means. */
export const DEFAULTS: PageState = {
  view: "run",
  preset: "",
  config: "",
  source: "workload",
  workload: "zipf",
  records: "1000000",
  footprint: "256M",
  seed: "",
  zipf: "",
  stride: "",
  write: "",
  vms: "",
  pages: "",
  seconds: "",
  trace: "",
  format: "auto",
  gva: "",
  kind: "read",
  cpu: "0",
  cold: true,
};

const KEYS: [keyof PageState, string][] = [
  ["view", "view"],
  ["preset", "preset"],
  ["config", "config"],
  ["workload", "workload"],
  ["records", "records"],
  ["footprint", "footprint"],
  ["seed", "seed"],
  ["zipf", "zipf"],
  ["stride", "stride"],
  ["write", "write"],
  ["vms", "vms"],
  ["pages", "pages"],
  ["seconds", "seconds"],
  ["trace", "trace"],
  ["format", "format"],
  ["gva", "gva"],
  ["kind", "kind"],
  ["cpu", "cpu"],
];

export function readUrl(search: string): { state: PageState; run: boolean } {
  const query = new URLSearchParams(search);
  const state: PageState = { ...DEFAULTS };
  for (const [field, key] of KEYS) {
    const value = query.get(key);
    if (value !== null) (state as unknown as Record<string, string>)[field] = value;
  }
  if (!(VIEWS as readonly string[]).includes(state.view)) state.view = "run";
  if (query.has("trace")) state.source = "trace";
  if (query.has("cold")) state.cold = query.get("cold") !== "0";
  return { state, run: query.get("run") === "1" };
}

export function writeUrl(state: PageState): string {
  const query = new URLSearchParams();
  for (const [field, key] of KEYS) {
    const value = state[field] as string;
    if (value === DEFAULTS[field]) continue;
    if (
      state.source === "trace" &&
      ["workload", "records", "footprint", "zipf", "stride", "write"].includes(key)
    )
      continue;
    if (state.source === "workload" && (key === "trace" || key === "format")) continue;
    query.set(key, value);
  }
  if (!state.cold) query.set("cold", "0");
  const text = query.toString();
  return text ? `?${text}` : "";
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** `over` on top of `base`: objects merge key by key, anything else replaces. */
export function merge(base: Json, over: Json): Json {
  if (!isObject(base) || !isObject(over)) return over;
  const result: { [key: string]: Json } = { ...base };
  for (const [key, value] of Object.entries(over))
    result[key] = key in base ? merge(base[key], value) : value;
  return result;
}

function isObject(value: Json | undefined): value is { [key: string]: Json } {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The config a run uses: the preset's config with the editor's keys on top, as JSON text, checked by
 * the CLI's own parser (`error` is its message, naming config.json and the key).
 */
export function effectiveConfig(
  presetConfig: Json | undefined,
  editorText: string,
): { text: string; json?: Json; error?: string } {
  const source = editorText.trim() === "" ? "{}" : editorText;
  let over: Json;
  try {
    over = JSON.parse(source) as Json;
  } catch {
    // The parser's own message for the syntax error.
    try {
      parseConfigText(source, "config.json");
    } catch (error) {
      return { text: source, error: (error as Error).message };
    }
    return { text: source, error: "config.json: not valid JSON" };
  }
  const json = presetConfig === undefined ? over : merge(presetConfig, over);
  const text = JSON.stringify(json, null, 2);
  try {
    parseConfigText(text, "config.json");
  } catch (error) {
    return { text, json, error: (error as Error).message };
  }
  return { text, json };
}

/** Reads and sets one key path of the editor's JSON object (the form edits the editor's keys). */
export function getKey(json: Json | undefined, path: string): Json | undefined {
  let node: Json | undefined = json;
  for (const part of path.split(".")) {
    if (!isObject(node)) return undefined;
    node = node[part];
  }
  return node;
}

export function setKey(json: Json, path: string, value: Json | undefined): Json {
  const root: { [key: string]: Json } = isObject(json) ? { ...json } : {};
  const parts = path.split(".");
  let node = root;
  parts.slice(0, -1).forEach((part) => {
    const child = node[part];
    node[part] = isObject(child) ? { ...child } : {};
    node = node[part] as { [key: string]: Json };
  });
  const last = parts[parts.length - 1];
  if (value === undefined) delete node[last];
  else node[last] = value;
  // Drop objects the removal left empty, so the editor keeps only what was set.
  for (let depth = parts.length - 1; depth > 0; depth--) {
    const container = depth === 1 ? root : getKey(root, parts.slice(0, depth - 1).join("."));
    const key = parts[depth - 1];
    if (!isObject(container)) break;
    const child = container[key];
    if (isObject(child) && Object.keys(child).length === 0) delete container[key];
  }
  return root;
}

export type { Json };
