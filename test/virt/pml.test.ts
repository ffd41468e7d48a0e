// Page-modification logging (docs/ept-npt.md §Page-modification logging; SDM Vol. 3C §29.3.6): the
// CPU's log of the guest-physical pages whose EPT dirty flag it sets, the PML-full exit, and the TDP
// MMU's dirty log built from it.
import { describe, expect, it } from "vitest";
import { parseConfigText } from "../../src/config/config.js";
import type { TdpMmu } from "../../src/hypervisor/tdp.js";
import { renderHtmlReport } from "../../src/report/html.js";
import { buildReport, formatTable } from "../../src/report/report.js";
import { Simulation } from "../../src/runner/simulation.js";
import { runWorkload } from "../../src/workload/run.js";
import { bareConfig, TwoDimensional } from "./harness.js";

const READ = 0;
const WRITE = 1;
const PML_FULL = 62;
const LA = 0x7f40_0000_0000n;
const DATA_GPA = 0x4000_0000n;
const PML_PAGE = 0x2000_0000n;
const EPT_DIRTY = 1n << 9n;
const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";

/**
 * An EPT guest with A/D on and `pages` 4K pages mapped at LA, each read once, so every guest table
 * page is already dirty in EPT and only data pages can be logged; then PML is enabled at index 511.
 */
function loggingGuest(pages: number): { two: TwoDimensional; leaves: bigint[] } {
  const two = new TwoDimensional("ept", 4, 4, bareConfig(), { accessedDirty: true });
  const leaves: bigint[] = [];
  for (let i = 0n; i < BigInt(pages); i++) {
    two.mapGuest(LA + i * 0x1000n, DATA_GPA + i * 0x1000n);
    leaves.push(two.mapNested(DATA_GPA + i * 0x1000n));
  }
  for (let i = 0n; i < BigInt(pages); i++)
    expect(two.machine.translate(0, LA + i * 0x1000n, READ).fault).toBe(0);
  two.machine.vmEnter(0, { nested: "ept", root: two.rootValue, vpid: 1, pml: { address: PML_PAGE } });
  return { two, leaves };
}

const logEntry = (two: TwoDimensional, index: number) => two.machine.readPhys64(PML_PAGE + BigInt(index * 8));

describe("page-modification logging in the CPU (SDM 29.3.6)", () => {
  it("a write that sets an EPT D flag logs the page's 4 KiB-aligned GPA at the PML index, which counts down from 511", () => {
    const { two } = loggingGuest(2);
    expect(two.machine.pmlIndex(0)).toBe(511);
    expect(two.machine.translate(0, LA + 0x1123n, WRITE).fault).toBe(0);
    expect(logEntry(two, 511)).toBe(DATA_GPA + 0x1000n);
    expect(two.machine.pmlIndex(0)).toBe(510);
    two.machine.translate(0, LA + 0x8n, WRITE);
    expect(logEntry(two, 510)).toBe(DATA_GPA);
    expect(two.machine.nestedStats().pml.logged).toBe(2);
    expect(two.machine.nestedStats().pml.cycles).toBeGreaterThan(0);
  });

  it("a page already dirty in EPT is not logged again", () => {
    const { two, leaves } = loggingGuest(2);
    two.machine.translate(0, LA, WRITE);
    two.machine.translate(0, LA + 0x10n, WRITE);
    // The host set D itself (or an earlier write did, before PML was on).
    two.machine.writePhys64(leaves[1], two.machine.readPhys64(leaves[1]) | EPT_DIRTY);
    two.machine.translate(0, LA + 0x1000n, WRITE);
    expect(two.machine.pmlIndex(0)).toBe(510);
    expect(two.machine.nestedStats().pml.logged).toBe(1);
  });

  it("a read logs nothing: only a dirty flag going from 0 to 1 is logged", () => {
    const { two } = loggingGuest(1);
    two.machine.translate(0, LA, READ);
    expect(two.machine.pmlIndex(0)).toBe(511);
  });

  it("with EPT A/D on, a guest page-table page is logged when the walk's write-like access first dirties it", () => {
    const two = new TwoDimensional("ept", 4, 4, bareConfig(), { accessedDirty: true });
    two.mapGuest(LA, DATA_GPA);
    two.mapNested(DATA_GPA);
    two.machine.vmEnter(0, { nested: "ept", root: two.rootValue, vpid: 1, pml: { address: PML_PAGE } });
    two.machine.translate(0, LA, READ);
    // The four guest table pages, top first; the data page was only read.
    expect([511, 510, 509, 508].map((i) => logEntry(two, i))).toEqual(
      [0n, 1n, 2n, 3n].map((i) => two.guestRoot + i * 0x1000n),
    );
    expect(two.machine.pmlIndex(0)).toBe(507);
  });

  it("the 513th newly dirtied page causes a PML-full exit and nothing is logged past index 0", () => {
    const { two, leaves } = loggingGuest(513);
    for (let i = 0; i < 512; i++)
      expect(two.machine.translate(0, LA + BigInt(i) * 0x1000n, WRITE).fault).toBe(0);
    // 512 entries, index 511 down to 0; the index wrapped to FFFFH.
    expect(two.machine.pmlIndex(0)).toBe(0xffff);
    for (let i = 0; i < 512; i++) expect(logEntry(two, 511 - i)).toBe(DATA_GPA + BigInt(i) * 0x1000n);
    const full = two.machine.translate(0, LA + 512n * 0x1000n, WRITE);
    expect(full.fault).toBe(PML_FULL);
    // The access did not happen: its EPT D flag is still clear, and nothing was written below the log.
    expect(two.machine.readPhys64(leaves[512]) & EPT_DIRTY).toBe(0n);
    expect(two.machine.readPhys64(PML_PAGE - 8n)).toBe(0n);
    expect(two.machine.nestedStats().pml.logged).toBe(512);
    // The VMM drains and resets the index: the access then runs and is logged at 511.
    two.machine.setPmlIndex(0, 511);
    expect(two.machine.translate(0, LA + 512n * 0x1000n, WRITE).fault).toBe(0);
    expect(logEntry(two, 511)).toBe(DATA_GPA + 512n * 0x1000n);
  });

  it("with the log full, an access that needs no A/D update runs: the index is examined only before an update", () => {
    const { two } = loggingGuest(2);
    two.machine.translate(0, LA, WRITE);
    two.machine.setPmlIndex(0, 0xffff);
    expect(two.machine.translate(0, LA, WRITE).fault).toBe(0);
    expect(two.machine.translate(0, LA + 0x1000n, READ).fault).toBe(0);
    expect(two.machine.translate(0, LA + 0x1000n, WRITE).fault).toBe(PML_FULL);
  });

  it("VM entry refuses a PML address that is not 4 KiB-aligned or lies at or above MAXPHYADDR", () => {
    const two = new TwoDimensional("ept", 4, 4, bareConfig(), { accessedDirty: true });
    const enter = (address: bigint) => () =>
      two.machine.vmEnter(0, { nested: "ept", root: two.rootValue, vpid: 1, pml: { address } });
    expect(enter(PML_PAGE + 8n)).toThrow(/PML address 0x20000008 must be 4 KiB-aligned/);
    expect(enter(1n << 52n)).toThrow(/below MAXPHYADDR/);
    expect(enter(PML_PAGE)).not.toThrow();
  });
});

describe('the TDP MMU\'s dirty log by PML (hypervisor.dirtyLog: "pml")', () => {
  const config = (dirtyLog: string, intervalCycles = 1e12) =>
    parseConfigText(
      `{"mode":"ept","hypervisor":{"dirtyLog":"${dirtyLog}","dirtyLogIntervalCycles":${intervalCycles}}}`,
      "pml test",
    );

  function dirtyPages(dirtyLog: string): { pages: string[]; simulation: Simulation } {
    const simulation = new Simulation(config(dirtyLog), { build });
    simulation.start();
    runWorkload(simulation, { name: "zipf", records: 40_000, footprint: 16 * 2 ** 20, seed: 1 });
    const tdp = simulation.technique as unknown as TdpMmu;
    return { pages: [...new Set(tdp.harvestDirty().map(String))].sort(), simulation };
  }

  it("the dirty log PML builds holds the same pages as scanning the EPT D flags", () => {
    const pml = dirtyPages("pml");
    const scan = dirtyPages("dbit");
    expect(pml.pages.length).toBeGreaterThan(512);
    expect(pml.pages).toEqual(scan.pages);
  });

  it("a PML-full exit drains the log and costs an exit; the report shows the exits, the entries and their cycles", () => {
    const simulation = new Simulation(config("pml", 1_000_000), { build });
    simulation.start();
    // Harvests clear D often, so pages already mapped are logged again with no EPT violation between.
    runWorkload(simulation, { name: "uniform", records: 60_000, footprint: 16 * 2 ** 20, seed: 1 });
    const report = buildReport(simulation, { kind: "workload", name: "uniform" });
    const p = report.virtualization?.pml;
    if (!p) throw new Error("no PML figures in the report");
    expect(p.fullExits).toBeGreaterThan(0);
    expect(report.virtualization?.exits.pmlFull).toBe(p.fullExits);
    expect(report.virtualization?.hypervisor.pml_full_exits).toBe(p.fullExits);
    expect(p.logged).toBeGreaterThanOrEqual(p.drained);
    expect(p.logged - p.drained).toBeLessThanOrEqual(512);
    expect(p.logCycles).toBeGreaterThan(0);
    expect(p.drainCycles).toBe(p.drained * 20);
    expect(p.exitCycles).toBe(p.fullExits * 1200);
    expect(formatTable(report)).toContain(`${p.fullExits.toLocaleString("en-US")} PML-full exits`);
    expect(renderHtmlReport([report])).toContain("PML-full VM exits");
  });

  it("a D-flag or write-protect harvest visits every nested leaf and charges dirtyScanLeafCycles for each; a PML harvest visits none", () => {
    for (const dirtyLog of ["dbit", "wp"]) {
      const { simulation } = dirtyPages(dirtyLog);
      const tdp = simulation.technique as unknown as TdpMmu;
      const leaves = tdp.mappedHostFrames().length;
      const stats = tdp.stats();
      // One harvest: the one dirtyPages took (the clock's interval is 10^12 cycles).
      expect(stats.dirty_log_harvests).toBe(1);
      expect(stats.dirty_scan_leaves).toBe(leaves);
      expect(stats.dirty_scan_cycles).toBe(leaves * 10);
    }
    const pml = dirtyPages("pml").simulation.technique as unknown as TdpMmu;
    expect(pml.stats().dirty_scan_leaves).toBeUndefined();
    expect(pml.counters.dirty_scan_leaves).toBe(0);
  });

  it('dirtyLog "pml" needs mode "ept" with EPT A/D: anything else is a config error naming the key', () => {
    expect(() => parseConfigText('{"mode":"npt","hypervisor":{"dirtyLog":"pml"}}', "c.json")).toThrow(
      /hypervisor\.dirtyLog.*needs mode "ept"/,
    );
    expect(() =>
      parseConfigText('{"mode":"ept","hypervisor":{"dirtyLog":"pml","eptAccessedDirty":false}}', "c.json"),
    ).toThrow(/hypervisor\.dirtyLog.*eptAccessedDirty true/);
    expect(() => parseConfigText('{"mode":"ept","hypervisor":{"dirtyLog":"log"}}', "c.json")).toThrow(
      /hypervisor\.dirtyLog/,
    );
  });
});
