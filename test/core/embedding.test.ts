// The embedding interface a host simulator uses (README "Embedding the core"): per-call `translate`
// and `translateBatch`, records in and one result per record out. The batch must give, record for
// record, what the calls give, faults included, and the same statistics.
import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/config.js";
import { BATCH_RESULT, EXIT_REASONS, Machine, RECORD_SIZE } from "../../src/core/machine.js";
import { AccessKind } from "../../src/core/types.js";

/** Four-level tables: 2 user pages at 0x1000 and 0x2000, a supervisor page at 0x3000, 0x4000 absent. */
function machine(): Machine {
  const m = new Machine(defaultConfig().machine);
  m.writePhys64(0x10_0000n, 0x10_1000n | 7n);
  m.writePhys64(0x10_1000n, 0x10_2000n | 7n);
  m.writePhys64(0x10_2000n, 0x10_3000n | 7n);
  m.writePhys64(0x10_3000n + 8n, 0x50_0000n | 7n);
  m.writePhys64(0x10_3000n + 16n, 0x60_0000n | 7n);
  m.writePhys64(0x10_3000n + 24n, 0x70_0000n | 3n);
  m.setRegs(0, { cr0: 0x8001_0001n, cr3: 0x10_0000n, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
  return m;
}

const ACCESSES: [bigint, number][] = [
  [0x1008n, AccessKind.Read],
  [0x2010n, AccessKind.Write],
  [0x1040n, AccessKind.Fetch],
  [0x3000n, AccessKind.Read], // supervisor page from CPL 3: #PF, protection
  [0x4000n, AccessKind.Read], // not present: #PF
  [0x8000_0000_0000n, AccessKind.Read], // non-canonical: #GP
  [0x1010n, AccessKind.Write],
  [0x2ff8n, AccessKind.Read],
  // Further hits on pages already in the L1 TLBs (the batch's L1-hit memo serves these).
  [0x1100n, AccessKind.Read],
  [0x1200n, AccessKind.Write],
  [0x1300n, AccessKind.Fetch],
  [0x1310n, AccessKind.Fetch],
  [0x2000n, AccessKind.Read],
  [0x2008n, AccessKind.Read],
];

describe("translateBatch: one result per record, as translate gives it", () => {
  it("gives each record the physical address (or error code), outcome, page size, references and cycles of a translate call, faults included, and the same statistics", () => {
    const single = machine();
    const expected = ACCESSES.map(([la, kind]) => {
      const r = single.translate(0, la, kind);
      single.countAccess();
      return r;
    });
    const batched = machine();
    const view = batched.recordView();
    ACCESSES.forEach(([la, kind], i) => {
      view.setBigUint64(i * RECORD_SIZE, la, true);
      view.setUint8(i * RECORD_SIZE + 8, kind);
      view.setUint16(i * RECORD_SIZE + 10, 0, true);
    });
    batched.translateBatch(0, ACCESSES.length);
    const outcomes = { 0: "none", 14: "pageFault", 13: "generalProtection" } as Record<number, string>;
    expected.forEach((r, i) => {
      const at = i * RECORD_SIZE;
      expect(EXIT_REASONS[view.getUint8(at + BATCH_RESULT.outcome)]).toBe(outcomes[r.fault]);
      expect(view.getBigUint64(at + BATCH_RESULT.pa, true)).toBe(r.fault === 0 ? r.pa : BigInt(r.errorCode));
      expect(view.getUint8(at + BATCH_RESULT.pageShift)).toBe(r.pageSize === 0 ? 0 : Math.log2(r.pageSize));
      expect(view.getUint16(at + BATCH_RESULT.refs, true)).toBe(r.refs);
      expect(view.getUint32(at + BATCH_RESULT.cycles, true)).toBe(r.cycles);
    });
    expect(expected.map((r) => r.fault)).toEqual([0, 0, 0, 14, 14, 13, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(batched.stats()).toEqual(single.stats());
  });

  it("marks a record for a CPU the machine lacks as a bad record and goes on with the next", () => {
    const m = machine();
    const view = m.recordView();
    view.setBigUint64(0, 0x1000n, true);
    view.setUint16(10, 3, true);
    view.setBigUint64(RECORD_SIZE, 0x1000n, true);
    m.translateBatch(0, 2);
    expect(EXIT_REASONS[view.getUint8(BATCH_RESULT.outcome)]).toBe("badRecord");
    expect(EXIT_REASONS[view.getUint8(RECORD_SIZE + BATCH_RESULT.outcome)]).toBe("none");
    expect(view.getBigUint64(RECORD_SIZE + BATCH_RESULT.pa, true)).toBe(0x50_0000n);
  });

  it("refuses a range outside the record buffer with a clear error", () => {
    expect(() => machine().translateBatch(0, 1 << 20)).toThrow(/not a range of records/);
  });
});
