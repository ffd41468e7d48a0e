import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import * as layout from "../../src/core/layout.js";
import * as statsLayout from "../../src/core/stats-layout.js";

/** Every `export const NAME: u32 = VALUE;` of an AssemblyScript source, evaluated. */
function constantsOf(path: string): Map<string, number> {
  const text = readFileSync(new URL(path, import.meta.url), "utf8");
  const constants = new Map<string, number>();
  for (const match of text.matchAll(/export const (\w+): u32 = ([^;]+);/g)) {
    const expression = match[2].replace(/\b([A-Z_][A-Z0-9_]*)\b/g, (name) => String(constants.get(name)));
    constants.set(match[1], Number(Function(`"use strict"; return (${expression});`)()));
  }
  return constants;
}

describe("the host's mirror of the linear-memory map", () => {
  it("src/core/layout.ts has every constant of assembly/constants.ts with the same value", () => {
    const core = constantsOf("../../assembly/constants.ts");
    expect(core.size).toBeGreaterThan(50);
    for (const [name, value] of core)
      expect([name, (layout as Record<string, number>)[name]]).toEqual([name, value]);
    expect(Object.keys(layout).length).toBe(core.size);
  });

  it("src/core/stats-layout.ts has every statistics index of assembly/stats.ts", () => {
    const core = constantsOf("../../assembly/stats.ts");
    for (const [name, value] of core)
      expect([name, (statsLayout as Record<string, number>)[name]]).toEqual([name, value]);
    expect(Object.keys(statsLayout).length).toBe(core.size);
  });

  it("the fixed regions do not overlap and stay below the frame directory", () => {
    const regions: [string, number, number][] = [
      ["control", layout.CTRL_BASE, layout.CTRL_SIZE],
      ["statistics", layout.STATS_BASE, layout.STATS_SIZE],
      ["records", layout.RECORDS_BASE, layout.RECORD_CAPACITY * layout.RECORD_SIZE],
      ["text", layout.TEXT_BASE, layout.TEXT_SIZE],
      ["tlb", layout.TLB_BASE, layout.TLB_SIZE],
      ["psc", layout.PSC_BASE, layout.PSC_SIZE],
      ["cache", layout.CACHE_BASE, layout.CACHE_SIZE],
      ["memo", layout.MEMO_BASE, layout.MEMO_REGION_SIZE],
      ["line memo", layout.LINE_MEMO_BASE, layout.MAX_CPUS * layout.LINE_MEMO_SLOTS * 4],
      ["frame memo", layout.FRAME_MEMO_BASE, layout.FRAME_MEMO_SLOTS * 16],
      ["iommu", layout.IOMMU_BASE, layout.IOMMU_SIZE],
      ["dma records", layout.DMA_BASE, layout.DMA_CAPACITY * layout.DMA_RECORD_SIZE],
    ];
    regions.sort((a, b) => a[1] - b[1]);
    for (let i = 1; i < regions.length; i++) {
      const [previous, base, size] = regions[i - 1];
      expect(base + size, `${previous} overlaps ${regions[i][0]}`).toBeLessThanOrEqual(regions[i][1]);
    }
    const [, lastBase, lastSize] = regions[regions.length - 1];
    expect(lastBase + lastSize).toBeLessThanOrEqual(layout.DIR_BASE);
    expect(layout.CPU_BASE + layout.MAX_CPUS * layout.CPU_STRIDE).toBeLessThanOrEqual(layout.EXIT_BASE);
    // The IOMMU's sub-regions stay inside its region.
    expect(layout.IO_FAULT_RECORD_BASE + layout.IO_MAX_FAULT_RECORDS * 16).toBeLessThanOrEqual(
      layout.IO_CC_BASE,
    );
    expect(layout.IO_CC_BASE + layout.IO_CC_MAX_ENTRIES * layout.IO_CC_ENTRY_SIZE).toBeLessThanOrEqual(
      layout.IO_IOTLB_BASE,
    );
    expect(
      layout.IO_IOTLB_BASE + layout.IO_IOTLB_MAX_ENTRIES * layout.IO_IOTLB_ENTRY_SIZE,
    ).toBeLessThanOrEqual(layout.IO_PSC_BASE);
    expect(layout.IO_WALK_SCRATCH + 5 * 32).toBeLessThanOrEqual(0x200);
    expect(layout.IO_PSC_BASE + layout.IO_PSC_MAX_ENTRIES * layout.IO_PSC_ENTRY_SIZE).toBeLessThanOrEqual(
      layout.IOMMU_SIZE,
    );
  });
});
