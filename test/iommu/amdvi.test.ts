// Rule tests for AMD-Vi (docs/iommu.md; docs/MODEL.md §13): device-table entries, I/O page tables with
// level skipping and Next Level 7 page sizes, IR/IW, and IO_PAGE_FAULT and other events in the log.
import { describe, expect, it } from "vitest";
import type { DmaRequest } from "../../src/iommu/hardware.js";
import { AmdDeviceTable, IoPageTable } from "../../src/iommu/tables.js";
import { setup } from "./harness.js";

const SID = 0x0208;
const RW = { read: true, write: true };
const LOG = 0x900_0000n;

function amd(overrides = {}) {
  const env = setup("amdvi", overrides);
  const devices = new AmdDeviceTable(env.machine, env.frames);
  const table = new IoPageTable(env.machine, env.frames, "amdvi", 4);
  devices.setDte(SID, { mode: 4, root: table.root, domain: 11 });
  env.iommu.setRoot(devices.base);
  env.iommu.setEventLog(LOG, 8);
  const one = (request: Partial<DmaRequest> & { address: bigint }) =>
    env.iommu.dma([{ sid: SID, write: false, ...request }])[0];
  return { ...env, devices, table, one };
}

describe("AMD-Vi device-table entries", () => {
  it("V=0 passes requests through untranslated", () => {
    const { one, devices, iommu } = amd();
    devices.clearDte(SID);
    iommu.flushAll();
    expect(one({ address: 0x1234_5000n, write: true })).toMatchObject({ status: 0, hpa: 0x1234_5000n });
  });

  it("V=1 with TV=0 has no table: the request is aborted with an IO_PAGE_FAULT event", () => {
    const { one, devices, iommu } = amd();
    devices.setDte(SID, { translationValid: false, mode: 0, domain: 11 });
    iommu.flushAll();
    expect(one({ address: 0x1000n }).status).not.toBe(0);
    expect(iommu.takeEvents()).toMatchObject([{ code: 2, deviceId: SID, domain: 11, address: 0x1000n }]);
  });

  it("mode 7 or a reserved DTE bit logs ILLEGAL_DEV_TABLE_ENTRY (event code 1)", () => {
    const { one, devices, iommu, machine } = amd();
    devices.setDte(SID, { mode: 7, domain: 11 });
    iommu.flushAll();
    expect(one({ address: 0x1000n, write: true }).cause).toBe("illegalDeviceTableEntry");
    const at = devices.base + BigInt(SID) * 32n;
    devices.setDte(SID, { mode: 4, domain: 11 });
    machine.writePhys64(at, machine.readPhys64(at) | 0x10n);
    iommu.flushAll();
    expect(one({ address: 0x1000n }).cause).toBe("illegalDeviceTableEntry");
    expect(iommu.takeEvents().map((e) => [e.code, e.flags])).toEqual([
      [1, 0x20],
      [1, 0],
    ]);
  });

  it("mode 0 leaves addresses untranslated but enforces the DTE's IR and IW", () => {
    const { one, devices, iommu } = amd();
    devices.setDte(SID, { mode: 0, domain: 11, read: true, write: false });
    iommu.flushAll();
    expect(one({ address: 0x5000n }).hpa).toBe(0x5000n);
    expect(one({ address: 0x5000n, write: true }).cause).toBe("noWrite");
    expect(iommu.takeEvents()[0]).toMatchObject({ code: 2, flags: 0x010 | 0x020 });
  });

  it("the DTE's IR/IW are ANDed into the page tables' permissions", () => {
    const { one, devices, table, iommu } = amd();
    table.map(0x6000n, 0x800_0000n, "4K", RW);
    devices.setDte(SID, { mode: 4, root: table.root, domain: 11, write: false });
    iommu.flushAll();
    expect(one({ address: 0x6000n }).status).toBe(0);
    expect(one({ address: 0x6000n, write: true }).cause).toBe("noWrite");
  });

  it("an address beyond the width of the DTE's mode faults (mode 3: 39 bits)", () => {
    const { one, devices, machine, frames, iommu } = amd();
    const table = new IoPageTable(machine, frames, "amdvi", 3);
    devices.setDte(SID, { mode: 3, root: table.root, domain: 11 });
    iommu.flushAll();
    expect(one({ address: 1n << 39n }).cause).toBe("addressBeyondWidth");
  });
});

describe("AMD-Vi I/O page tables", () => {
  it("a not-present PTE logs IO_PAGE_FAULT with PR=0, a permission fault with PR=1 and RW", () => {
    const { one, table, iommu } = amd();
    expect(one({ address: 0x7000n }).cause).toBe("pageNotPresent");
    table.map(0x8000n, 0x800_0000n, "4K", { read: true, write: false });
    expect(one({ address: 0x8000n, write: true }).cause).toBe("noWrite");
    expect(iommu.takeEvents().map((e) => [e.code, e.flags, e.address])).toEqual([
      [2, 0, 0x7000n],
      [2, 0x030, 0x8000n],
    ]);
  });

  it("a reserved PTE bit logs IO_PAGE_FAULT with RZ", () => {
    const { one, table, machine, iommu } = amd();
    table.map(0x9000n, 0x800_0000n, "4K", RW);
    machine.writePhys64(table.root, machine.readPhys64(table.root) | (1n << 55n));
    expect(one({ address: 0x9000n }).cause).toBe("entryReserved");
    expect(iommu.takeEvents()[0].flags & 0x080).toBe(0x080);
  });

  it("Next Level skips levels: a level-4 entry with NL=1 points straight at a level-1 table", () => {
    const { one, machine, devices, iommu } = amd();
    const root = 0x60_0000n;
    const leafTable = 0x60_1000n;
    machine.writePhys64(root, leafTable | 1n | (1n << 9n) | (3n << 61n));
    machine.writePhys64(leafTable + 5n * 8n, 0xa00_0000n | 1n | (3n << 61n));
    devices.setDte(SID, { mode: 4, root, domain: 11 });
    iommu.flushAll();
    const before = iommu.stats().walkRefs;
    expect(one({ address: 0x5abcn }).hpa).toBe(0xa00_0abcn);
    expect(iommu.stats().walkRefs - before).toBe(2);
    // The skipped levels' index bits (29:21 and 38:30 here) must be zero.
    expect(one({ address: 0x20_5000n }).cause).toBe("pageNotPresent");
    expect(one({ address: 0x40_0000_5000n }).cause).toBe("pageNotPresent");
  });

  it("Next Level 7 encodes the page size in the address: a 32K page repeated over 8 slots", () => {
    const { one, machine, devices, iommu } = amd();
    const root = 0x70_0000n;
    const pdpt = 0x70_1000n;
    const pd = 0x70_2000n;
    const pt = 0x70_3000n;
    machine.writePhys64(root, pdpt | 1n | (3n << 9n) | (3n << 61n));
    machine.writePhys64(pdpt, pd | 1n | (2n << 9n) | (3n << 61n));
    machine.writePhys64(pd, pt | 1n | (1n << 9n) | (3n << 61n));
    // 32 KiB: address bits 12 and 13 set, bit 14 clear (first zero at 14: 2^(14+1)).
    const leaf = 0xb00_0000n | 0x3000n | 1n | (7n << 9n) | (3n << 61n);
    for (let slot = 8n; slot < 16n; slot++) machine.writePhys64(pt + slot * 8n, leaf);
    devices.setDte(SID, { mode: 4, root, domain: 11 });
    iommu.flushAll();
    expect(one({ address: 0xf123n }).hpa).toBe(0xb00_7123n);
    expect(one({ address: 0x8010n }).hpa).toBe(0xb00_0010n);
    // At a level-2 table an encoded size no larger than 2M is invalid.
    machine.writePhys64(pd + 8n, 0xc00_0000n | 0x3000n | 1n | (7n << 9n) | (3n << 61n));
    expect(one({ address: 0x20_0000n }).cause).toBe("entryReserved");
  });

  it("a Next Level not below the entry's level is invalid", () => {
    const { one, machine, devices, iommu } = amd();
    const root = 0x78_0000n;
    machine.writePhys64(root, 0x78_1000n | 1n | (4n << 9n) | (3n << 61n));
    devices.setDte(SID, { mode: 4, root, domain: 11 });
    iommu.flushAll();
    expect(one({ address: 0x1000n }).cause).toBe("entryReserved");
  });

  it("a 2M leaf (NL=0 at a level-2 table) translates in 3 references", () => {
    const { one, table, iommu } = amd();
    table.map(0x60_0000n, 0x4000_0000n, "2M", RW);
    const before = iommu.stats().walkRefs;
    expect(one({ address: 0x6f_fff8n }).hpa).toBe(0x400f_fff8n);
    expect(iommu.stats().walkRefs - before).toBe(3);
  });

  it("a full event log sets EventOverflow and drops events", () => {
    const { one, iommu } = amd();
    for (let i = 0; i < 9; i++) one({ address: BigInt(i) << 12n });
    expect(iommu.status & 1).toBe(1);
    expect(iommu.stats()).toMatchObject({ faultsRecorded: 7, faultOverflows: 2 });
    expect(iommu.takeEvents()).toHaveLength(7);
  });
});
