// The software side (docs/iommu.md; README "Devices and the IOMMU"): the driver's strict and deferred
// invalidation, VFIO pass-through, SR-IOV requester ids, the dma-* workloads and their CLI contract.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { defaultConfig, resolveConfig } from "../../src/config/config.js";
import { Machine } from "../../src/core/machine.js";
import { IommuDriver } from "../../src/iommu/driver.js";
import { platformOf, runDmaWorkload } from "../../src/iommu/workload.js";
import { Simulation } from "../../src/runner/simulation.js";
import { BumpFrames, hardware } from "./harness.js";

const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";
const temp = mkdtempSync(join(tmpdir(), "memvirt-iommu-"));

function driver(mode: "strict" | "deferred", kind: "vtd" | "amdvi" = "vtd") {
  const machine = new Machine(defaultConfig().machine);
  const frames = new BumpFrames();
  const d = new IommuDriver(machine, frames, {
    hardware: hardware(kind),
    mode,
    scalable: false,
    firstLevel: false,
    levels: 4,
    flushQueue: 4,
    costs: { pteCycles: 10, invalidationCycles: 100 },
  });
  const domain = d.newDomain();
  d.attach(0x0100, domain);
  return { machine, frames, driver: d, domain };
}

describe("the IOMMU driver", () => {
  for (const kind of ["vtd", "amdvi"] as const) {
    it(`${kind}: strict dma_unmap invalidates the range and waits before the IOVA is reused`, () => {
      const { driver: d, domain, frames } = driver("strict", kind);
      const iova = d.mapPages(domain, [frames.alloc("4K")], true);
      expect(d.iommu.dma([{ sid: 0x0100, address: iova, write: true }])[0].status).toBe(0);
      d.unmapPages(domain, iova, 1);
      expect(d.iommu.dma([{ sid: 0x0100, address: iova, write: true }])[0].status).not.toBe(0);
      const inv = d.iommu.stats().invalidations;
      expect(kind === "vtd" ? inv.iotlbPage : inv.iommuPages).toBeGreaterThanOrEqual(1);
      // The next mapping of the same size reuses the IOVA.
      expect(d.mapPages(domain, [frames.alloc("4K")], true)).toBe(iova);
    });

    it(`${kind}: deferred dma_unmap leaves the IOTLB stale until the flush queue drains`, () => {
      const { driver: d, domain, frames } = driver("deferred", kind);
      const mapped = [0, 1, 2, 3].map(() => d.mapPages(domain, [frames.alloc("4K")], true));
      for (const iova of mapped) d.iommu.dma([{ sid: 0x0100, address: iova, write: false }]);
      d.unmapPages(domain, mapped[0], 1);
      // Still reachable through the IOTLB: the window deferred invalidation trades for fewer flushes.
      expect(d.iommu.dma([{ sid: 0x0100, address: mapped[0], write: false }])[0].status).toBe(0);
      for (const iova of mapped.slice(1)) d.unmapPages(domain, iova, 1);
      expect(d.stats.flushQueueFlushes).toBe(1);
      expect(d.iommu.dma([{ sid: 0x0100, address: mapped[0], write: false }])[0].status).not.toBe(0);
      const inv = d.iommu.stats().invalidations;
      expect(kind === "vtd" ? inv.iotlbDomain : inv.iommuPages).toBe(2); // attach + one flush
    });
  }
});

describe("devices and workloads", () => {
  it("pass-through: a NIC's DMA write lands in the host frame that backs the guest's buffer", () => {
    const config = resolveConfig({
      mode: "ept",
      guest: { memory: "2G" },
      host: { pageSize: "2M" },
      iommu: { mode: "passthrough" },
    });
    const simulation = new Simulation(config, { build });
    simulation.start();
    const platform = platformOf(simulation);
    const report = runDmaWorkload(platform, { name: "dma-nic", operations: 8, seed: 1 });
    expect(report.completed).toBe(report.requests);
    const vm = platform.vm?.vm;
    expect(vm).toBeDefined();
    // Receive packets are odd operations; the guest's first receive buffer holds packet 1's data. The
    // rings were allocated first (two pages), then buffers, from the guest kernel's allocator.
    const machine = simulation.machine;
    let found = false;
    for (const slot of vm?.memslots ?? []) {
      for (let gpa = slot.base; gpa < slot.base + 0x100_0000n; gpa += 0x1000n) {
        const hpa = vm?.hostAddress(gpa) ?? 0n;
        if (machine.readPhys64(hpa) === 1n && machine.readPhys64(hpa + 1496n) === 1n) found = true;
      }
    }
    expect(found).toBe(true);
  });

  it("SR-IOV virtual functions issue DMA with their own requester ids, each in its own domain", () => {
    const config = resolveConfig({ devices: [{ kind: "nvme", bdf: "05:00.0", virtualFunctions: 2 }] });
    const simulation = new Simulation(config, { build });
    simulation.start();
    const report = runDmaWorkload(platformOf(simulation), { name: "dma-nvme", operations: 6, seed: 3 });
    expect(report.devices).toEqual(["nvme 05:00.0", "nvme 05:00.1 (VF)", "nvme 05:00.2 (VF)"]);
    // One context-cache miss per requester id: three contexts.
    expect(report.contextCache.misses).toBe(3);
    expect(report.completed).toBe(report.requests);
  });

  it("the same config and seed give identical results", () => {
    const once = () => {
      const simulation = new Simulation(resolveConfig({ iommu: { mode: "deferred", kind: "amdvi" } }), {
        build,
      });
      simulation.start();
      return runDmaWorkload(platformOf(simulation), { name: "dma-nvme", operations: 300, seed: 9 });
    };
    expect(once()).toEqual(once());
  });
});

describe("memvirt run --workload dma-*", () => {
  async function run(args: string[]) {
    const lines: string[] = [];
    const code = await main(["node", "memvirt", ...args, "--build", build], (t) => lines.push(t));
    return { code, output: lines.join("\n") };
  }

  it("reports the iommu JSON keys", async () => {
    for (const workload of ["dma-nic", "dma-nvme", "dma-gpu"]) {
      const { code, output } = await run(["run", "--workload", workload, "--records", "200", "--json"]);
      expect(code).toBe(0);
      const { iommu } = JSON.parse(output);
      for (const key of ["translations", "walkRefs", "cycles"]) expect(iommu[key]).toBeGreaterThan(0);
      expect(iommu.iotlb).toEqual({ hits: expect.any(Number), misses: expect.any(Number) });
      expect(iommu.invalidations.wait).toBeGreaterThan(0);
      expect(iommu.faults).toEqual({});
    }
  });

  it("rejects a bad iommu or devices key with exit code 2 and names the key", async () => {
    for (const [config, key] of [
      [{ iommu: { kind: "smmu" } }, "iommu.kind"],
      [{ iommu: { iotlb: { entries: 12, ways: 8 } } }, "iommu.iotlb"],
      [{ devices: [{ kind: "nic", bdf: "1:2:3" }] }, "devices[0].bdf"],
      [{ iommu: { mode: "passthrough" } }, "iommu.mode"],
    ] as const) {
      const file = join(temp, "bad.json");
      writeFileSync(file, JSON.stringify(config));
      const stderr: string[] = [];
      const write = process.stderr.write.bind(process.stderr);
      process.stderr.write = ((text: string) => stderr.push(text)) as typeof process.stderr.write;
      try {
        const { code } = await run(["run", "--config", file, "--workload", "dma-nic", "--records", "10"]);
        expect(code).toBe(2);
      } finally {
        process.stderr.write = write;
      }
      expect(stderr.join("")).toContain(`"${key}"`);
    }
  });

  it("compare shows the off, strict, deferred and pass-through rows", async () => {
    const { code, output } = await run(["compare", "--workload", "dma-nic", "--records", "100", "--json"]);
    expect(code).toBe(0);
    const result = JSON.parse(output);
    expect(result.rows.map((r: { mode: string }) => r.mode)).toEqual([
      "off",
      "strict",
      "deferred",
      "passthrough",
    ]);
    const [off, strict, deferred] = result.rows;
    expect(off.translations).toBe(0);
    expect(strict.invalidations).toBeGreaterThan(deferred.invalidations);
  });
});
