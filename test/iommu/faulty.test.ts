// The dma-faulty workload: a NIC that writes to an IOVA nobody mapped, into a buffer mapped for it to
// read only, and under a requester id nobody attached. Behind either IOMMU each write is refused and
// reported (VT-d fault records, AMD-Vi IO_PAGE_FAULT events); without one each lands.
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.js";
import { type IommuReport, platformOf, runDmaWorkload } from "../../src/iommu/workload.js";
import { Simulation } from "../../src/runner/simulation.js";
import { runMemvirt } from "../cli/in-process.js";

function faulty(iommu: Record<string, string>, operations = 800): IommuReport {
  const simulation = new Simulation(resolveConfig({ iommu }));
  simulation.start();
  return runDmaWorkload(platformOf(simulation), { name: "dma-faulty", operations, seed: 3 });
}

const total = (report: IommuReport) =>
  Object.values(report.rogueRequests ?? {}).reduce((sum, n) => sum + n, 0);

describe("dma-faulty: a misbehaving device", () => {
  it("VT-d: every rogue write is a fault record; a missing entry and a read-only one are reason 5, the unattached requester reason 2", () => {
    const report = faulty({ kind: "vtd" });
    const rogue = report.rogueRequests ?? { unmappedIova: 0, readOnlyWrite: 0, unassignedRequester: 0 };
    expect(total(report)).toBe(50);
    for (const n of Object.values(rogue)) expect(n).toBeGreaterThan(0);
    expect(report.faults).toEqual({
      noWrite: rogue.unmappedIova + rogue.readOnlyWrite,
      contextNotPresent: rogue.unassignedRequester,
    });
    expect(report.faultLog?.records).toBe(50);
    expect(report.faultLog?.events).toEqual({});
    expect(report.completed).toBe(report.requests - 50);
    expect(report.faultLog?.first[0]).toMatchObject({
      record: "vtd",
      source: expect.stringMatching(/^01:00\.[01]$/),
    });
  });

  it("AMD-Vi: every rogue write is an IO_PAGE_FAULT event, with PR set where an entry refused it", () => {
    const report = faulty({ kind: "amdvi" });
    const rogue = report.rogueRequests ?? { unmappedIova: 0, readOnlyWrite: 0, unassignedRequester: 0 };
    expect(report.faultLog?.events).toEqual({ IO_PAGE_FAULT: 50 });
    expect(report.faults).toEqual({
      pageNotPresent: rogue.unmappedIova,
      noWrite: rogue.readOnlyWrite + rogue.unassignedRequester,
    });
    for (const fault of report.faultLog?.first ?? []) {
      expect(fault).toMatchObject({ event: "IO_PAGE_FAULT" });
      if ("flags" in fault) expect(fault.flags).toContain("RW");
    }
  });

  it("AMD-Vi: a requester the driver never attached is blocked (valid, no translation, no IR/IW), not passed through untranslated", () => {
    const report = faulty({ kind: "amdvi" });
    expect(report.untranslated).toBe(0);
    const spoofed = (report.faultLog?.first ?? []).filter(
      (fault) => "device" in fault && fault.device === "01:00.1",
    );
    expect(spoofed.length).toBeGreaterThan(0);
    for (const fault of spoofed) expect(fault).toMatchObject({ domain: 0, flags: ["PR", "RW"] });
  });

  it("without an IOMMU nothing stops them: the writes land, except where no memory answers", () => {
    const report = faulty({ mode: "off" });
    expect(report.faults).toEqual({});
    expect(report.faultLog).toBeUndefined();
    expect(report.completed).toBe(report.requests - (report.rogueRequests?.unmappedIova ?? 0));
  });

  it("memvirt run --workload dma-faulty --json reports the fault log", async () => {
    const { code, output } = await runMemvirt([
      "run",
      "--workload",
      "dma-faulty",
      "--records",
      "320",
      "--json",
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(output);
    expect(report.iommu.faultLog.records).toBe(20);
    expect(report.iommu.rogueRequests).toBeDefined();
  });
});
