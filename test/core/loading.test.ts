// Loading the core on every host (src/core/wasm.ts): `new Machine` synchronously in Node, `await
// Machine.create` and `await Simulation.create` anywhere, the core given as bytes, a compiled module
// or a URL, and the packaged core found beside the module that loads it.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/config.js";
import { Machine } from "../../src/core/machine.js";
import { AccessKind } from "../../src/core/types.js";
import { defaultBuild, loadCore, packagedWasmUrl } from "../../src/core/wasm.js";
import { Simulation } from "../../src/runner/simulation.js";
import { runWorkload } from "../../src/workload/run.js";

const build = defaultBuild();

/** PML4 -> PDPT -> PD -> PT at 0x1000..0x4000, linear 0x1000 -> frame 0x9000; the read of 0x1234. */
function walk(machine: Machine) {
  machine.writePhys64(0x1000n, 0x2000n | 7n);
  machine.writePhys64(0x2000n, 0x3000n | 7n);
  machine.writePhys64(0x3000n, 0x4000n | 7n);
  machine.writePhys64(0x4008n, 0x9000n | 7n);
  machine.setRegs(0, { cr0: 0x8001_0001n, cr3: 0x1000n, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
  return machine.translate(0, 0x1234n, AccessKind.Read);
}

describe("one core, every way of loading it", () => {
  it("the packaged core is the build's file beside the sources, two directories above src/core", () => {
    expect(packagedWasmUrl(build).pathname).toMatch(new RegExp(`/build/${build}\\.wasm$`));
    expect(packagedWasmUrl("debug").pathname).toMatch(/\/build\/debug\.wasm$/);
  });

  it("await Machine.create gives the machine new Machine gives, from the packaged core, its bytes, a compiled module or a file URL", async () => {
    const expected = walk(new Machine(defaultConfig().machine, { build }));
    const bytes = new Uint8Array(readFileSync(packagedWasmUrl(build)));
    const sources = [
      undefined,
      bytes,
      await WebAssembly.compile(bytes),
      packagedWasmUrl(build),
      packagedWasmUrl(build).href,
    ];
    for (const wasm of sources) {
      const machine = await Machine.create(defaultConfig().machine, { build, wasm });
      expect(machine.build).toBe(build);
      expect(walk(machine)).toEqual(expected);
    }
  });

  it("new Machine takes a compiled module too, and loadCore's module serves later machines", async () => {
    const module = await loadCore({ build });
    const expected = walk(new Machine(defaultConfig().machine, { build }));
    expect(walk(new Machine(defaultConfig().machine, { build, wasm: module }))).toEqual(expected);
  });

  it("await Simulation.create runs a workload to the statistics of new Simulation", async () => {
    const spec = { name: "zipf" as const, records: 20_000, footprint: 16 << 20, seed: 3 };
    const config = defaultConfig();
    const made = new Simulation(config, { build });
    made.start();
    runWorkload(made, spec);
    const created = await Simulation.create(config, { build });
    created.start();
    runWorkload(created, spec);
    expect(created.stats()).toEqual(made.stats());
  });

  it("a URL that is not a file cannot load synchronously: new Machine says to await Machine.create", () => {
    expect(
      () => new Machine(defaultConfig().machine, { build, wasm: "https://example.invalid/core.wasm" }),
    ).toThrow(/loads asynchronously: use `await Machine.create/);
  });
});
