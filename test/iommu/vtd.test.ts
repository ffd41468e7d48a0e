// Rule tests for Intel VT-d (docs/iommu.md; docs/MODEL.md §13): root and context entries, second-level
// tables of 3, 4 and 5 levels with 2M and 1G pages, scalable mode with PASID tables and every PGTT,
// and the fault reasons 1 to 0xD with fault recording.
import { describe, expect, it } from "vitest";
import type { DmaRequest } from "../../src/iommu/hardware.js";
import { IoPageTable, VtdRootTable } from "../../src/iommu/tables.js";
import { MEMORY_TOP, setup } from "./harness.js";

const SID = 0x0310; // 03:02.0
const RW = { read: true, write: true };

function legacy(overrides = {}) {
  const env = setup("vtd", overrides);
  const root = new VtdRootTable(env.machine, env.frames, false);
  const table = new IoPageTable(env.machine, env.frames, "vtd-sl", 4);
  root.setContext(SID, { domain: 7, aw: 2, root: table.root });
  env.iommu.setRoot(root.rtaddr);
  const one = (request: Partial<DmaRequest> & { address: bigint }) =>
    env.iommu.dma([{ sid: SID, write: false, ...request }])[0];
  return { ...env, root, table, one };
}

describe("VT-d legacy mode: root and context entries", () => {
  it("a root entry with P=0 faults with reason 1", () => {
    const { one, iommu } = legacy();
    expect(one({ sid: 0x0410, address: 0x1000n }).status).toBe(1);
    expect(iommu.faultRecords()[0]).toMatchObject({ reason: 1, sid: 0x0410, address: 0x1000n, write: false });
  });

  it("a context entry with P=0 faults with reason 2", () => {
    const { one } = legacy();
    expect(one({ sid: SID + 1, address: 0x1000n }).status).toBe(2);
  });

  it("a context entry with TT=3, or an AW the hardware does not support, faults with reason 3", () => {
    const { one, root, table } = legacy();
    root.setContext(SID, { domain: 7, aw: 2, root: table.root, tt: 3 });
    expect(one({ address: 0x1000n }).status).toBe(3);
    const other = legacy({ supportedAw: [2] });
    other.root.setContext(SID, { domain: 7, aw: 3, root: other.table.root });
    expect(other.one({ address: 0x1000n }).status).toBe(3);
  });

  it("an address above the width AW gives faults with reason 4 (AW=1: 39 bits)", () => {
    const { one, root, machine, frames } = legacy();
    const table = new IoPageTable(machine, frames, "vtd-sl", 3);
    table.map(0x7f_ffff_f000n, 0x5000000n, "4K", RW);
    root.setContext(SID, { domain: 7, aw: 1, root: table.root });
    expect(one({ address: 0x7f_ffff_f008n }).hpa).toBe(0x5000008n);
    expect(one({ address: 0x80_0000_0000n }).status).toBe(4);
  });

  it("a write to a page without W faults with reason 5 and the record says write (T=0)", () => {
    const { one, table, iommu } = legacy();
    table.map(0x2000n, 0x9000000n, "4K", { read: true, write: false });
    expect(one({ address: 0x2010n }).status).toBe(0);
    expect(one({ address: 0x2010n, write: true }).status).toBe(5);
    expect(iommu.faultRecords()[0]).toMatchObject({ reason: 5, write: true, address: 0x2000n });
  });

  it("a read through a not-present second-level entry faults with reason 6", () => {
    const { one } = legacy();
    expect(one({ address: 0x3000n }).status).toBe(6);
    expect(one({ address: 0x3000n, write: true }).status).toBe(5);
  });

  it("a paging entry in memory that does not exist faults with reason 7", () => {
    const { one, root, machine } = legacy();
    // A PML4 entry pointing at a table beyond the top of memory.
    const pml4 = 0x800000n;
    machine.writePhys64(pml4, (MEMORY_TOP + 0x1000n) | 3n);
    root.setContext(SID, { domain: 7, aw: 2, root: pml4 });
    expect(one({ address: 0x1000n }).status).toBe(7);
  });

  it("a root table beyond memory faults with reason 8, a context table beyond memory with reason 9", () => {
    const { one, iommu, machine, root } = legacy();
    iommu.setRoot(MEMORY_TOP);
    expect(one({ address: 0x1000n }).status).toBe(8);
    iommu.setRoot(root.rtaddr);
    machine.writePhys64(root.root + BigInt(SID >> 8) * 16n, MEMORY_TOP | 1n);
    expect(one({ address: 0x1000n }).status).toBe(9);
  });

  it("reserved bits in a root entry fault with reason 0xA, in a context entry with 0xB", () => {
    const { one, machine, root } = legacy();
    const entry = root.root + BigInt(SID >> 8) * 16n;
    const lo = machine.readPhys64(entry);
    machine.writePhys64(entry + 8n, 1n); // the high qword of a legacy root entry is reserved
    expect(one({ address: 0x1000n }).status).toBe(0xa);
    machine.writePhys64(entry + 8n, 0n);
    machine.writePhys64(entry, lo | 0x10n);
    expect(one({ address: 0x1000n }).status).toBe(0xa);
    machine.writePhys64(entry, lo);
    const context = root.contextEntryAddress(SID);
    machine.writePhys64(context + 8n, machine.readPhys64(context + 8n) | (1n << 40n));
    expect(one({ address: 0x1000n }).status).toBe(0xb);
  });

  it("reserved bits in a paging entry fault with reason 0xC", () => {
    const { one, table, machine } = legacy();
    table.map(0x4000n, 0x9000000n, "4K", RW);
    const pml4e = table.root;
    const good = machine.readPhys64(pml4e);
    machine.writePhys64(pml4e, good | 0x80n); // PS at level 4
    expect(one({ address: 0x4000n }).status).toBe(0xc);
    machine.writePhys64(pml4e, good | (1n << 50n)); // beyond MAXPHYADDR (46)
    expect(one({ address: 0x4000n }).status).toBe(0xc);
    machine.writePhys64(pml4e, good | (1n << 11n)); // SNP without snoop control
    expect(one({ address: 0x4000n }).status).toBe(0xc);
  });

  it("a 2M leaf with address bits 20:12 set, or a 1G leaf without 1G support, faults with reason 0xC", () => {
    const { one, table, machine, iommu } = legacy();
    table.map(0x20_0000n, 0x4000_0000n, "2M", RW);
    expect(one({ address: 0x21_2345n }).hpa).toBe(0x4001_2345n);
    const noGb = legacy({ largePages: { "2M": true, "1G": false } });
    noGb.table.map(0x4000_0000n, 0x8000_0000n, "1G", RW);
    expect(noGb.one({ address: 0x4000_0000n }).status).toBe(0xc);
    const pdpt = machine.readPhys64(table.root) & 0xffff_ffff_f000n;
    const pd = machine.readPhys64(pdpt) & 0xffff_ffff_f000n;
    machine.writePhys64(pd + 8n, 0x4000_0000n | 0x1000n | 0x83n);
    iommu.flushAll();
    expect(one({ address: 0x20_0000n }).status).toBe(0xc);
  });

  it("an ATS translated request faults with reason 0xD unless TT=1 enables the device TLB", () => {
    const { one, root, table, iommu } = legacy();
    expect(one({ address: 0x7000n, translated: true }).status).toBe(0xd);
    expect(iommu.faultRecords()[0]).toMatchObject({ reason: 0xd, translated: true });
    root.setContext(SID, { domain: 7, aw: 2, root: table.root, tt: 1 });
    iommu.flushAll();
    expect(one({ address: 0x7000n, translated: true }).hpa).toBe(0x7000n);
  });

  it("TT=2 passes requests through untranslated", () => {
    const { one, root, iommu } = legacy();
    root.setContext(SID, { domain: 7, tt: 2 });
    iommu.flushAll();
    expect(one({ address: 0x1234_5678n, write: true })).toMatchObject({ status: 0, hpa: 0x1234_5678n });
  });

  it("FPD=1 in the context entry suppresses fault recording but the request still faults", () => {
    const { one, root, table, iommu } = legacy();
    root.setContext(SID, { domain: 7, aw: 2, root: table.root, faultProcessingDisable: true });
    expect(one({ address: 0x3000n }).status).toBe(6);
    expect(iommu.faultRecords()).toEqual([]);
    expect(iommu.stats().faults.noRead).toBe(1);
  });
});

describe("VT-d fault recording", () => {
  it("records advance FRI and set PPF; a full ring sets PFO and loses the fault until software clears", () => {
    const { one, iommu } = legacy({ faultRecords: 2 });
    one({ address: 0x1000n });
    expect((iommu.faultStatus >> 8) & 0xff).toBe(1);
    expect(iommu.faultStatus & 2).toBe(2);
    one({ address: 0x2000n, write: true });
    one({ address: 0x3000n });
    expect(iommu.faultStatus & 1).toBe(1); // PFO
    expect(iommu.faultRecords().map((r) => r.address)).toEqual([0x1000n, 0x2000n]);
    expect(iommu.stats().faultOverflows).toBe(1);
    iommu.clearFaultRecord(0);
    iommu.clearFaultRecord(1);
    expect(iommu.faultStatus & 2).toBe(0);
    iommu.clearStatus(1);
    one({ address: 0x4000n });
    expect(iommu.faultRecords()).toMatchObject([{ index: 0, address: 0x4000n, reason: 6 }]);
  });

  it("a DMA that faults moves no data", () => {
    const { one, table, machine } = legacy();
    table.map(0x2000n, 0x9000000n, "4K", { read: true, write: false });
    expect(one({ address: 0x2000n, write: true, data: 0x55n, length: 64 }).status).toBe(5);
    expect(machine.readPhys64(0x9000000n)).toBe(0n);
  });

  it("a request crossing a 4 KiB boundary is malformed: nothing is translated or moved", () => {
    const { one, iommu } = legacy();
    expect(one({ address: 0xff8n, length: 16 }).cause).toBe("bad");
    expect(iommu.stats().translations).toBe(0);
  });
});

describe("VT-d second-level tables", () => {
  for (const aw of [1, 2, 3]) {
    it(`AW=${aw} walks ${aw + 2} levels with 4K, 2M and 1G leaves`, () => {
      const { machine, frames, root, iommu, one } = legacy();
      const table = new IoPageTable(machine, frames, "vtd-sl", aw + 2);
      table.map(0x1000n, 0x6000_0000n, "4K", RW);
      table.map(0x40_0000n, 0x6020_0000n, "2M", RW);
      table.map(0x8000_0000n, 0x1_0000_0000n, "1G", RW);
      root.setContext(SID, { domain: 9, aw, root: table.root });
      iommu.flushAll();
      const refs = () => iommu.stats().walkRefs;
      let before = refs();
      expect(one({ address: 0x1abcn }).hpa).toBe(0x6000_0abcn);
      expect(refs() - before).toBe(aw + 2);
      before = refs();
      expect(one({ address: 0x41_0000n }).hpa).toBe(0x6021_0000n);
      expect(refs() - before).toBe(aw + 1);
      before = refs();
      expect(one({ address: 0xc000_0000n - 8n }).hpa).toBe(0x1_3fff_fff8n);
      expect(refs() - before).toBe(aw);
    });
  }
});

describe("VT-d scalable mode", () => {
  function scalable() {
    const env = setup("vtd");
    const root = new VtdRootTable(env.machine, env.frames, true);
    env.iommu.setRoot(root.rtaddr);
    return { ...env, root };
  }

  it("the low half of a root entry serves devfn < 128 and the high half the rest", () => {
    const { machine, frames, root, iommu } = scalable();
    const table = new IoPageTable(machine, frames, "vtd-sl", 4);
    table.map(0x1000n, 0x7000_0000n, "4K", RW);
    root.setPasidEntry(0x0180, 0, { domain: 2, pgtt: 2, aw: 2, secondLevelRoot: table.root });
    expect(iommu.dma([{ sid: 0x0180, address: 0x1000n, write: false }])[0].hpa).toBe(0x7000_0000n);
    expect(machine.readPhys64(root.root + 0x10n + 8n) & 1n).toBe(1n);
    expect(iommu.dma([{ sid: 0x0100, address: 0x1000n, write: false }])[0].status).toBe(1);
  });

  it("PGTT=1 walks first-level x86 tables, sets A and D, and needs U/S at every level", () => {
    const { machine, frames, root, iommu } = scalable();
    const table = new IoPageTable(machine, frames, "vtd-fl", 4);
    table.map(0x5000n, 0x7100_0000n, "4K", RW);
    root.setPasidEntry(SID, 3, { domain: 4, pgtt: 1, firstLevelRoot: table.root, firstLevels: 4 });
    const [r] = iommu.dma([{ sid: SID, pasid: 3, address: 0x5008n, write: true }]);
    expect(r.hpa).toBe(0x7100_0008n);
    const pml4e = machine.readPhys64(table.root);
    expect(pml4e & 0x20n).toBe(0x20n);
    const pdpt = pml4e & 0xffff_ffff_f000n;
    const pd = machine.readPhys64(pdpt) & 0xffff_ffff_f000n;
    const pt = machine.readPhys64(pd) & 0xffff_ffff_f000n;
    expect(machine.readPhys64(pt + 5n * 8n) & 0x60n).toBe(0x60n);
    machine.writePhys64(pd, machine.readPhys64(pd) & ~4n); // clear U/S in the PDE
    iommu.flushAll();
    expect(iommu.dma([{ sid: SID, pasid: 3, address: 0x5008n, write: false }])[0].status).toBe(6);
  });

  it("PGTT=2 walks second-level tables for requests without a PASID through RID_PASID", () => {
    const { machine, frames, root, iommu } = scalable();
    const table = new IoPageTable(machine, frames, "vtd-sl", 4);
    table.map(0x9000n, 0x7200_0000n, "4K", RW);
    root.setPasidEntry(SID, 5, { domain: 4, pgtt: 2, aw: 2, secondLevelRoot: table.root }, { ridPasid: 5 });
    expect(iommu.dma([{ sid: SID, address: 0x9010n, write: false }])[0].hpa).toBe(0x7200_0010n);
  });

  it("PGTT=3 nests: every first-level table address and the final address go through the second level", () => {
    const { machine, frames, root, iommu } = scalable();
    // The first-level tables live in guest-physical space at GPA 0x100000.., backed at HPA + 0x4000_0000.
    const second = new IoPageTable(machine, frames, "vtd-sl", 4);
    const gpaBase = 0x10_0000n;
    const shift = 0x4000_0000n;
    for (let gpa = gpaBase; gpa < gpaBase + 0x10000n; gpa += 0x1000n) second.map(gpa, gpa + shift, "4K", RW);
    second.map(0x20_0000n, 0x5_0000_0000n, "2M", RW); // guest memory the device reaches
    const fl = [0n, 1n, 2n, 3n].map((i) => gpaBase + i * 0x1000n);
    machine.writePhys64(fl[0] + shift, fl[1] | 7n);
    machine.writePhys64(fl[1] + shift, fl[2] | 7n);
    machine.writePhys64(fl[2] + shift, fl[3] | 7n);
    machine.writePhys64(fl[3] + shift + 8n * 7n, 0x20_3000n | 7n);
    root.setPasidEntry(SID, 1, {
      domain: 4,
      pgtt: 3,
      aw: 2,
      firstLevelRoot: fl[0],
      secondLevelRoot: second.root,
    });
    const before = iommu.stats().walkRefs;
    const [r] = iommu.dma([{ sid: SID, pasid: 1, address: 0x7123n, write: false }]);
    expect(r.hpa).toBe(0x5_0000_3123n);
    // 4 first-level reads, each after a 4-level second-level walk, then a 3-level walk of the GPA: 24.
    expect(iommu.stats().walkRefs - before).toBe(4 * 5 + 3);
  });

  it("PGTT=4 passes through; an invalid PGTT or a missing PASID entry faults with 0x58", () => {
    const { root, iommu } = scalable();
    root.setPasidEntry(SID, 2, { domain: 4, pgtt: 4 });
    expect(iommu.dma([{ sid: SID, pasid: 2, address: 0xabc000n, write: true }])[0].hpa).toBe(0xabc000n);
    expect(iommu.dma([{ sid: SID, pasid: 9, address: 0x1000n, write: false }])[0].cause).toBe("pasidEntry");
    root.setPasidEntry(SID, 10, { domain: 4, pgtt: 6 });
    expect(iommu.dma([{ sid: SID, pasid: 10, address: 0x1000n, write: false }])[0].cause).toBe("pasidEntry");
    expect(iommu.faultRecords().map((r) => [r.reason, r.pasid])).toEqual([
      [0x58, 9],
      [0x58, 10],
    ]);
  });
});
