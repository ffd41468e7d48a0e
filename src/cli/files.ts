// The options that name files, read in Node: the config a run starts from (a preset with a config file
// over it) and the outputs, checked before any work is done.
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
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
 * Checked before a run starts, so a typo does not throw its work away at the end. Creates nothing: a
 * file that appeared at `path`, even for a moment, would break the promise that a checkpoint's or a
 * converted trace's final name holds a whole file or none.
 */
export function checkOutput(path: string, flag: string): void {
  const fail = (why: string): never => {
    throw new MemvirtError(`${flag} ${path}: cannot write: ${why}`);
  };
  let exists = true;
  try {
    if (statSync(path).isDirectory()) fail("it is a directory");
  } catch (error) {
    if (error instanceof MemvirtError) throw error;
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") fail((error as Error).message);
    exists = false;
  }
  try {
    // An existing file must be writable; a new one needs a folder it can be created in.
    accessSync(exists ? path : dirname(resolve(path)), constants.W_OK);
  } catch (error) {
    fail((error as Error).message);
  }
}
