// CPU presets (`--preset NAME`, `memvirt presets`): the files in presets/, each a CPU's TLBs,
// paging-structure caches, nested TLB and latencies with their sources (docs/presets.md). Only a
// file's `config` reaches the resolver; the rest is its documentation.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Json } from "../config/validate.js";
import { MemvirtError } from "../core/errors.js";

export interface PresetFile {
  name: string;
  description: string;
  config: Json;
}

/**
 * presets/ beside the package: two levels up from src/cli in a checkout, three from dist/src/cli. The
 * URLs are literals so that the CLI bundle (scripts/bundle-cli.mjs) can rewrite them for its place.
 */
function presetsDir(): string {
  for (const url of [
    new URL("../../presets/", import.meta.url),
    new URL("../../../presets/", import.meta.url),
  ]) {
    const dir = fileURLToPath(url);
    if (existsSync(dir)) return dir;
  }
  throw new MemvirtError("the presets/ folder is missing from this memvirt installation", 1);
}

/** Every preset, by name. */
export function listPresets(): PresetFile[] {
  const dir = presetsDir();
  return readdirSync(dir)
    .filter((file) => file.endsWith(".json"))
    .sort()
    .map((file) => JSON.parse(readFileSync(dir + file, "utf8")) as PresetFile);
}

/** The config of preset `name`; an unknown name is refused with the names there are. */
export function presetConfig(name: string): Json {
  const presets = listPresets();
  const preset = presets.find((p) => p.name === name);
  if (!preset)
    throw new MemvirtError(
      `--preset ${name}: no such preset (there are ${presets.map((p) => p.name).join(", ")}; see memvirt presets)`,
    );
  return preset.config;
}

/** `memvirt presets`: one line each, name and description. */
export function formatPresets(presets: PresetFile[]): string {
  const width = Math.max(...presets.map((p) => p.name.length));
  return presets.map((p) => `${p.name.padEnd(width)}  ${p.description}`).join("\n");
}
