// The options that name files, read in Node: the config a run starts from (a preset with a config file
// over it) and the outputs, checked before any work is done.
import { closeSync, openSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { ConfigError, mergeConfig, type ResolvedConfig, resolveConfig } from "../config/config.js";
import type { Json } from "../config/validate.js";
import { MemvirtError } from "../core/errors.js";
import { presetConfig } from "./presets.js";

/**
 * The config a run starts from: the preset's (`--preset NAME`), with the config file's keys laid over it
 * (`--config FILE`), resolved and checked key by key; the built-in default with neither. `defaults`
 * lies under both (a run's own defaults, such as EPT for several VMs).
 */
export function loadConfig(path: string | undefined, preset?: string, defaults: Json = {}): ResolvedConfig {
  const base = mergeConfig(defaults, preset ? presetConfig(preset) : {});
  if (!path) return resolveConfig(base);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new MemvirtError(`${path}: cannot read the config: ${(error as Error).message}`);
  }
  let json: Json;
  try {
    json = JSON.parse(text) as Json;
  } catch (error) {
    throw new ConfigError(`${path}: not valid JSON: ${(error as Error).message}`);
  }
  try {
    return resolveConfig(mergeConfig(base, json));
  } catch (error) {
    if (error instanceof ConfigError)
      throw new ConfigError(`${path}${preset ? ` (over preset ${preset})` : ""}: ${error.message}`);
    throw error;
  }
}

/**
 * Fails, naming the flag, when `path` cannot be written: a directory, a missing folder, no permission.
 * Checked before a run starts, so a typo does not throw its work away at the end. Leaves nothing behind.
 */
export function checkOutput(path: string, flag: string): void {
  const fail = (why: string): never => {
    throw new MemvirtError(`${flag} ${path}: cannot write: ${why}`);
  };
  let exists = false;
  try {
    const stat = statSync(path);
    exists = true;
    if (stat.isDirectory()) fail("it is a directory");
  } catch (error) {
    if (error instanceof MemvirtError) throw error;
  }
  try {
    if (exists) closeSync(openSync(path, "r+"));
    else {
      closeSync(openSync(path, "wx"));
      unlinkSync(path);
    }
  } catch (error) {
    fail((error as Error).message);
  }
}
