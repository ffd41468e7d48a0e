// Shared set-up for the IOMMU tests: a machine, a bump allocator of host frames, and an IOMMU.
import { defaultConfig } from "../../src/config/config.js";
import { Machine } from "../../src/core/machine.js";
import type { PageSize } from "../../src/core/types.js";
import { Iommu, type IommuHardwareConfig, type IommuKind } from "../../src/iommu/hardware.js";
import type { HostFrames } from "../../src/iommu/tables.js";

export class BumpFrames implements HostFrames {
  constructor(private next = 0x100000n) {}
  alloc(size: PageSize): bigint {
    const bytes = size === "4K" ? 0x1000n : size === "2M" ? 0x200000n : 0x40000000n;
    const base = (this.next + bytes - 1n) & ~(bytes - 1n);
    this.next = base + bytes;
    return base;
  }
  release(): void {}
}

export const MEMORY_TOP = 1n << 40n;

export function hardware(kind: IommuKind, overrides: Partial<IommuHardwareConfig> = {}): IommuHardwareConfig {
  return {
    kind,
    supportedAw: [1, 2, 3],
    largePages: { "2M": true, "1G": true },
    snoopControl: false,
    memoryTop: MEMORY_TOP,
    iotlb: { entries: 64, ways: 4, policy: "lru", latency: 2 },
    contextCache: { entries: 16, ways: 4, policy: "lru" },
    faultRecords: 4,
    ...overrides,
  };
}

export function setup(kind: IommuKind, overrides: Partial<IommuHardwareConfig> = {}) {
  const machine = new Machine(defaultConfig().machine);
  const iommu = new Iommu(machine, hardware(kind, overrides));
  const frames = new BumpFrames();
  return { machine, iommu, frames };
}
