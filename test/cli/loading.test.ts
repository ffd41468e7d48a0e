// Each command loads only the subsystems it uses (issue 15): the modules the compiled command line
// (dist/src/cli/main.js) loads for a command, logged by module hooks (test/cli/module-log.mjs). The
// `memvirt` bin runs these modules bundled into one file (scripts/bundle-cli.mjs), where each module
// is evaluated when first imported, as here: a module this graph does not load, the bundle does not
// run. One spawn each, on the release build only (what is loaded does not depend on the build).
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { scratch } from "./in-process.js";

const main = new URL("../../dist/src/cli/main.js", import.meta.url).href;
/** What bin/memvirt.js does with the bundle, with the unbundled modules. */
const cli = `const { main } = await import(${JSON.stringify(main)});
process.exitCode = await main(["node", "memvirt", ...process.argv.slice(1)]);`;
const hooks = new URL("./module-log.mjs", import.meta.url).href;
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const { dir } = scratch("memvirt-loading-");

/** The memvirt modules (paths under dist/src/) `memvirt ARGS` loads. */
function modulesLoaded(name: string, args: string[]): string[] {
  const log = join(dir, `${name}.log`);
  const register = `import{register}from"node:module";register(${JSON.stringify(hooks)});`;
  const command = ["--import", `data:text/javascript,${register}`, "--input-type=module", "-e", cli, ...args];
  const result = spawnSync(process.execPath, command, {
    env: { ...process.env, MEMVIRT_MODULE_LOG: log },
  });
  expect(result.status, result.stderr.toString()).toBe(0);
  return readFileSync(log, "utf8")
    .split("\n")
    .filter((url) => url.includes("/dist/src/"))
    .map((url) => url.slice(url.indexOf("/dist/src/") + "/dist/src/".length));
}

describe.skipIf(process.env.MEMVIRT_BUILD === "debug")("each command loads only what it uses", () => {
  it("memvirt presets loads no core, no IOMMU, no overcommitted host and no reports", () => {
    const loaded = modulesLoaded("presets", ["presets"]);
    expect(loaded).toContain("cli/presets.js");
    // The names the options list (trace formats) and the error class are all it takes of them.
    const heavy = loaded.filter(
      (path) =>
        /^(core|iommu|overcommit|report|runner|trace|cluster)\//.test(path) &&
        !["core/errors.js", "trace/formats.js"].includes(path),
    );
    expect(heavy).toEqual([]);
  });

  it("a trace run loads no overcommitted host, checkpoints, HTML reports, sweeps or queues", () => {
    const loaded = modulesLoaded("trace-run", ["run", "--trace", fixture("ls-head.lk"), "--json"]);
    expect(loaded).toContain("core/wasm.js");
    expect(
      loaded.filter((path) =>
        /^(overcommit\/(host|ksm|balloon|zswap|controller)|runner\/(checkpoint|sweep|queue)|report\/html|cluster\/|iommu\/workload|cli\/(overcommit|sweep-run|multi-vm))/.test(
          path,
        ),
      ),
    ).toEqual([]);
  });
});
