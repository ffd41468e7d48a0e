// IOMMU benchmarks: DMA translations per second of the release core, in batches of DMA_CAPACITY
// requests per call (V8 optimises a Wasm function only between calls).
import { defaultConfig } from "../src/config/config.js";
import { DMA_CAPACITY } from "../src/core/layout.js";
import { Machine } from "../src/core/machine.js";
import { Iommu } from "../src/iommu/hardware.js";
import { IoPageTable, VtdRootTable } from "../src/iommu/tables.js";

const SID = 0x0100;
const PAGES = 16384;

/** A VT-d IOMMU in legacy mode with one device whose 4-level table maps PAGES 4K pages. */
function deviceWithPages(iotlb: boolean): { machine: Machine; iommu: Iommu } {
  const machine = new Machine(defaultConfig().machine, { build: "release" });
  const iommu = new Iommu(machine, {
    kind: "vtd",
    supportedAw: [1, 2, 3],
    largePages: { "2M": true, "1G": true },
    snoopControl: false,
    memoryTop: 1n << 40n,
    iotlb: iotlb ? { entries: 128, ways: 8, policy: "lru", latency: 2 } : null,
    contextCache: { entries: 64, ways: 4, policy: "lru" },
    faultRecords: 8,
  });
  let next = 0x10_0000n;
  const frames = {
    alloc: () => {
      next += 0x1000n;
      return next;
    },
    release: () => {},
  };
  const root = new VtdRootTable(machine, frames, false);
  const table = new IoPageTable(machine, frames, "vtd-sl", 4);
  for (let page = 0; page < PAGES; page++)
    table.map(0x4000_0000n + BigInt(page) * 0x1000n, 0x8000_0000n + BigInt(page) * 0x1000n, "4K", {
      read: true,
      write: true,
    });
  root.setContext(SID, { domain: 1, aw: 2, root: table.root });
  iommu.setRoot(root.rtaddr);
  return { machine, iommu };
}

/** Loads DMA_CAPACITY read requests on pages `pageOf(i)` and returns the batch runner. */
export function dmaBatch(iotlb: boolean, pageOf: (i: number) => number): () => void {
  const { iommu } = deviceWithPages(iotlb);
  const view = iommu.recordView();
  for (let i = 0; i < DMA_CAPACITY; i++) {
    Iommu.writeRecord(view, i, {
      sid: SID,
      address: 0x4000_0000n + BigInt(pageOf(i)) * 0x1000n + BigInt((i * 64) % 4096),
      write: i % 4 === 0,
      length: 64,
    });
  }
  iommu.runRecords(DMA_CAPACITY);
  const stats = iommu.stats();
  if (stats.translations !== DMA_CAPACITY || Object.keys(stats.faults).length > 0)
    throw new Error("IOMMU bench set-up: the batch did not translate cleanly");
  return () => iommu.runRecords(DMA_CAPACITY);
}

export { DMA_CAPACITY };
