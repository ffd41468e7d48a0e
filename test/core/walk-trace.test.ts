// One access explained reference by reference (Machine.traceTranslate, explainWalk): the core's
// references placed in the walk's grid, what stood in for the entries it skipped, and faults decoded.
// Each case runs a guest kernel that built its tables by demand paging, then walks one of its pages.

import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.js";
import { explainWalk, type WalkExplanation } from "../../src/core/walk-trace.js";
import { Simulation } from "../../src/runner/simulation.js";
import { runWorkload } from "../../src/workload/run.js";

const READ = 0;

/** A simulation that ran a small Zipf workload, and the pages it touched. */
function ran(config: Record<string, unknown>): { simulation: Simulation; pages: bigint[] } {
  const simulation = new Simulation(resolveConfig(config as never));
  simulation.start();
  runWorkload(simulation, { name: "zipf", records: 4000, footprint: 2 ** 20, seed: 1 });
  const view = simulation.recordView();
  const pages = new Set<bigint>();
  for (let i = 0; i < 1000; i++) pages.add(view.getBigUint64(i * 16, true) & ~0xfffn);
  return { simulation, pages: [...pages] };
}

const reads = (walk: WalkExplanation) => walk.references.filter((r) => !r.update);
const grid = (walk: WalkExplanation) =>
  walk.cells.map((c) => `${c.dimension === "guest" ? "g" : "n"}${c.guestLevel}.${c.nestedLevel}:${c.source}`);

describe("explainWalk", () => {
  it("a cold 4+4-level EPT walk without nested PSCs reads 24 entries: per guest level the 4 EPT entries of its table's address, then the guest entry; then 4 for the final address", () => {
    const { simulation, pages } = ran({ mode: "ept", nestedPsc: false });
    const walk = explainWalk(simulation.machine, 0, pages[0] | 0x123n, READ, { cold: true });
    expect(walk.result.fault).toBe(0);
    expect(walk.result.refs).toBe(24);
    expect(walk.result.nestedRefs).toBe(20);
    expect(reads(walk)).toHaveLength(24);
    expect(walk.cells.map((c) => c.order)).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
    const rows = [4, 3, 2, 1].flatMap((g) => [...[4, 3, 2, 1].map((n) => `n${g}.${n}`), `g${g}.0`]);
    expect(
      walk.cells.map((c) => `${c.dimension === "guest" ? "g" : "n"}${c.guestLevel}.${c.nestedLevel}`),
    ).toEqual([...rows, "n0.4", "n0.3", "n0.2", "n0.1"]);
    // Each guest entry sits where the nested walk of its guest-physical address led.
    for (const guest of walk.cells.filter((c) => c.dimension === "guest")) {
      expect(guest.address & 0xfffn).toBe(guest.guestPhysical! & 0xfffn);
    }
    // The final nested walk translates the guest's leaf frame, and its leaf gives the result.
    const final = walk.cells.filter((c) => c.guestLevel === 0);
    expect(final[0].guestPhysical! & ~0xfffn).toBe(walk.cells[19].value & 0x000f_ffff_ffff_f000n);
    expect(walk.result.pa).toBe((final[3].value & 0x000f_ffff_ffff_f000n) | 0x123n);
    const cycles = walk.cells.reduce((sum, c) => sum + c.cycles, 0);
    expect(cycles).toBeGreaterThan(0);
  });

  it("tracing changes nothing: the traced access costs, counts and translates exactly as an untraced one", () => {
    const a = ran({ mode: "ept" });
    const b = ran({ mode: "ept" });
    for (const machine of [a.simulation.machine, b.simulation.machine]) machine.flushAll(0);
    for (const page of a.pages.slice(0, 40)) {
      const plain = a.simulation.machine.translate(0, page | 8n, READ);
      const traced = b.simulation.machine.traceTranslate(0, page | 8n, READ);
      expect(traced.result).toEqual(plain);
      expect(traced.references.filter((r) => !r.update)).toHaveLength(plain.refs);
      expect(traced.references.reduce((sum, r) => sum + r.cycles, 0)).toBeLessThanOrEqual(plain.cycles);
    }
    expect(b.simulation.machine.stats()).toEqual(a.simulation.machine.stats());
    expect(b.simulation.machine.nestedStats()).toEqual(a.simulation.machine.nestedStats());
  });

  it("with nested PSCs, the nested walks after the first enter at the EPT PT: the EPT PDE cache held their 2 MiB region", () => {
    const { simulation, pages } = ran({ mode: "ept" });
    const walk = explainWalk(simulation.machine, 0, pages[0], READ, { cold: true });
    expect(walk.result.refs).toBe(reads(walk).length);
    const skipped = walk.cells.filter((c) => c.source === "nested-psc");
    expect(skipped.length).toBeGreaterThan(0);
    for (const cell of skipped) expect(cell.nestedLevel).toBeGreaterThan(1);
    expect(walk.caches.find((c) => c.name === "nested PSC pde")?.hits).toBeGreaterThan(0);
  });

  it("a PDE-cache hit skips the guest's upper levels and the nested walk of the page table: the cached entry holds its host address", () => {
    const { simulation, pages } = ran({ mode: "ept" });
    simulation.machine.flushAll(0);
    explainWalk(simulation.machine, 0, pages[0], READ);
    const neighbour = pages.find((p) => p >> 21n === pages[0] >> 21n && p !== pages[0]);
    expect(neighbour).toBeDefined();
    const walk = explainWalk(simulation.machine, 0, neighbour!, READ);
    expect(walk.caches.find((c) => c.name === "PSC pde")?.hits).toBe(1);
    const row1 = grid(walk).filter((cell) => cell.startsWith("n1.") || cell.startsWith("g1."));
    expect(row1).toEqual([
      "n1.4:psc",
      "n1.3:psc",
      "n1.2:psc",
      "n1.1:psc",
      expect.stringMatching(/^g1\.0:(l1|l2|llc|dram)$/),
    ]);
    for (const cell of walk.cells.filter((c) => c.guestLevel > 1)) expect(cell.source).toBe("psc");
  });

  it("a repeated access hits the L1 DTLB and reads nothing", () => {
    const { simulation, pages } = ran({ mode: "native" });
    const walk = explainWalk(simulation.machine, 0, pages[0], READ);
    expect(walk.tlbHit).toBe("l1d");
    expect(walk.references).toEqual([]);
    expect(walk.cells.every((c) => c.source === "tlb")).toBe(true);
  });

  it("a native walk reads four levels, and five with LA57", () => {
    for (const levels of [4, 5]) {
      const { simulation, pages } = ran({ mode: "native", guest: { levels } });
      const walk = explainWalk(simulation.machine, 0, pages[0], READ, { cold: true });
      expect(walk.dimensions).toBe("native");
      expect(walk.cells.map((c) => c.guestLevel)).toEqual(levels === 5 ? [5, 4, 3, 2, 1] : [4, 3, 2, 1]);
      expect(reads(walk)).toHaveLength(levels);
    }
  });

  it("a walk to an unmapped page ends in a #PF whose error code has P clear and U/S set for a user read", () => {
    const { simulation } = ran({ mode: "native" });
    const walk = explainWalk(simulation.machine, 0, 0x7f00_0000_0000n, READ, { cold: true });
    expect(walk.fault?.name).toMatch(/^#PF/);
    const bits = Object.fromEntries(walk.fault!.bits.map((b) => [b.name, b.set]));
    expect(bits).toMatchObject({ P: false, "W/R": false, "U/S": true, RSVD: false, "I/D": false });
    const last = walk.cells.filter((c) => c.order !== undefined).at(-1)!;
    expect(last.value & 1n).toBe(0n);
  });

  for (const [mode, name, finalBit, tableBit] of [
    ["ept", "EPT violation", 8, 8],
    ["npt", "#NPF", 32, 33],
  ] as const) {
    it(`${mode.toUpperCase()}: a missing nested leaf of the final address is a ${name} with bit ${finalBit} set; of a guest table's page, ${mode === "ept" ? "bit 8 clear" : "bit 33 set"}`, () => {
      const { simulation, pages } = ran({ mode });
      const machine = simulation.machine;
      const before = explainWalk(machine, 0, pages[0], READ, { cold: true });
      const leafOf = (row: number) => before.cells.find((c) => c.guestLevel === row && c.nestedLevel === 1)!;
      const set = (walk: WalkExplanation, bit: number) => walk.fault!.bits.find((b) => b.bit === bit)?.set;

      const finalLeaf = leafOf(0);
      const saved = finalLeaf.value;
      machine.writePhys64(finalLeaf.address, 0n);
      const final = explainWalk(machine, 0, pages[0], READ, { cold: true });
      expect(final.fault?.name.startsWith(name)).toBe(true);
      expect(final.fault?.gpa).toBe(finalLeaf.guestPhysical! & ~0xfffn);
      expect(set(final, finalBit)).toBe(true);
      expect(set(final, 0)).toBe(mode === "ept");
      expect(final.cells.at(-1)?.source).not.toBe("not-reached");
      machine.writePhys64(finalLeaf.address, saved);

      const tableLeaf = leafOf(1);
      machine.writePhys64(tableLeaf.address, 0n);
      const table = explainWalk(machine, 0, pages[0], READ, { cold: true });
      expect(table.fault?.gpa).toBe(tableLeaf.guestPhysical);
      expect(set(table, tableBit)).toBe(mode !== "ept");
      expect(table.cells.filter((c) => c.guestLevel === 0).every((c) => c.source === "not-reached")).toBe(
        true,
      );
    });
  }
});
