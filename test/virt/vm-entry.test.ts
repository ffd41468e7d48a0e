// Machine state as the SDM describes it, on the core and the reference model alike: VM entry takes the
// EPTP as the VMCS holds it (walk length in bits 5:3, A/D enable in bit 6) and refuses the EPTPs
// hardware refuses; `eptExecuteOnly` decides whether an EPT entry with permissions 100b is legal; and
// physical memory ends at 2^MAXPHYADDR for both (docs/MODEL.md §2, §12).

import { describe, expect, it } from "vitest";
import { bareConfig, IMPLEMENTATIONS, type Target } from "./harness.js";

const READ = 0;
const FETCH = 2;
const EPT_VIOLATION = 48;
const EPT_MISCONFIG = 49;
const EPT_ROOT = 0x1000_0000n;
const GUEST_ROOT = 0x100_0000n;
const DATA_GPA = 0x3000_0000n;
const HOST_OFFSET = 0x10_0000_0000n;
const LA = 0x7f40_0000_0000n;
/** EPTP memory type WB (6) and walk length - 1 in bits 5:3. */
const eptp = (levels: 4 | 5, ad = false) => EPT_ROOT | 6n | (BigInt(levels - 1) << 3n) | (ad ? 1n << 6n : 0n);
const index = (address: bigint, level: number) => (address >> BigInt(12 + 9 * (level - 1))) & 0x1ffn;

/**
 * A 4-level guest whose tables and data page are mapped by EPT of `levels` levels (4K leaves at gpa +
 * HOST_OFFSET, RWX write-back, the data page with `dataRights`); `LA` maps to DATA_GPA. Returns the
 * host-physical address of the data page's EPT leaf.
 */
function build(target: Target, levels: 4 | 5, dataRights = 7n): bigint {
  let nextEptTable = EPT_ROOT + 0x1000n;
  let leafOfData = 0n;
  const mapNested = (gpa: bigint, rights: bigint) => {
    let table = EPT_ROOT;
    for (let level = levels; level > 1; level--) {
      const slot = table + index(gpa, level) * 8n;
      let entry = target.readPhys64(slot);
      if (entry === 0n) {
        entry = nextEptTable | 7n;
        nextEptTable += 0x1000n;
        target.writePhys64(slot, entry);
      }
      table = entry & 0x000f_ffff_ffff_f000n;
    }
    const slot = table + index(gpa, 1) * 8n;
    target.writePhys64(slot, (gpa + HOST_OFFSET) | 0x30n | rights);
    return slot;
  };
  mapNested(GUEST_ROOT, 7n);
  let table = GUEST_ROOT;
  for (let level = 4; level > 1; level--) {
    const child = GUEST_ROOT + BigInt(5 - level) * 0x1000n;
    mapNested(child, 7n);
    target.writePhys64(table + HOST_OFFSET + index(LA, level) * 8n, child | 7n);
    table = child;
  }
  target.writePhys64(table + HOST_OFFSET + index(LA, 1) * 8n, DATA_GPA | 7n);
  leafOfData = mapNested(DATA_GPA, dataRights);
  target.setRegs(0, { cr0: 0x8001_0001n, cr3: GUEST_ROOT, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
  return leafOfData;
}

describe("VM entry decodes the EPTP as the VMCS holds it (SDM 25.6.11, 27.2.1.1)", () => {
  for (const [name, create] of IMPLEMENTATIONS) {
    for (const levels of [4, 5] as const) {
      it(`[${name}] an EPTP with bits 5:3 = ${levels - 1} walks ${levels} EPT levels: a full 2D walk makes 5 x ${levels} nested references`, () => {
        const target = create(bareConfig());
        build(target, levels);
        target.vmEnter(0, { nested: "ept", root: eptp(levels), vpid: 1 });
        const result = target.translate(0, LA, READ);
        expect(result.fault).toBe(0);
        expect(result.pa).toBe(DATA_GPA + HOST_OFFSET);
        expect(result.nestedRefs).toBe(5 * levels);
      });
    }

    for (const ad of [true, false]) {
      it(`[${name}] EPTP bit 6 ${ad ? "set" : "clear"}: a read ${ad ? "sets" : "leaves clear"} the accessed flag (bit 8) of the data page's EPT leaf`, () => {
        const target = create(bareConfig());
        const leaf = build(target, 4);
        target.vmEnter(0, { nested: "ept", root: eptp(4, ad), vpid: 1 });
        expect(target.translate(0, LA, READ).fault).toBe(0);
        expect((target.readPhys64(leaf) >> 8n) & 1n).toBe(ad ? 1n : 0n);
      });
    }

    for (const memoryType of [1n, 2n, 3n, 4n, 5n, 7n]) {
      it(`[${name}] VM entry refuses an EPTP with reserved memory type ${memoryType}`, () => {
        const target = create(bareConfig());
        build(target, 4);
        expect(() =>
          target.vmEnter(0, { nested: "ept", root: (eptp(4) & ~7n) | memoryType, vpid: 1 }),
        ).toThrow(/memory type/);
      });
    }

    it(`[${name}] VM entry accepts an EPTP with memory type UC (0)`, () => {
      const target = create(bareConfig());
      build(target, 4);
      target.vmEnter(0, { nested: "ept", root: eptp(4) & ~7n, vpid: 1 });
      expect(target.translate(0, LA, READ).fault).toBe(0);
    });

    for (const walk of [0n, 1n, 2n, 5n, 6n, 7n]) {
      it(`[${name}] VM entry refuses an EPTP whose bits 5:3 give the unsupported walk length ${walk + 1n}`, () => {
        const target = create(bareConfig());
        build(target, 4);
        const root = (eptp(4) & ~0x38n) | (walk << 3n);
        expect(() => target.vmEnter(0, { nested: "ept", root, vpid: 1 })).toThrow(/walk length/);
      });
    }

    for (const bit of [7n, 8n, 11n, 46n, 63n]) {
      it(`[${name}] VM entry refuses an EPTP with reserved bit ${bit} set (MAXPHYADDR 46)`, () => {
        const target = create(bareConfig());
        build(target, 4);
        expect(() => target.vmEnter(0, { nested: "ept", root: eptp(4) | (1n << bit), vpid: 1 })).toThrow(
          /reserved/,
        );
      });
    }
  }
});

describe("eptExecuteOnly: an EPT entry with permissions 100b (SDM 29.3.3.1, IA32_VMX_EPT_VPID_CAP bit 0)", () => {
  for (const [name, create] of IMPLEMENTATIONS) {
    it(`[${name}] with execute-only support (the default), a 100b leaf translates a fetch and makes a read an EPT violation`, () => {
      const target = create(bareConfig());
      build(target, 4, 4n);
      target.vmEnter(0, { nested: "ept", root: eptp(4), vpid: 1 });
      expect(target.translate(0, LA, FETCH).fault).toBe(0);
      const read = target.translate(0, LA, READ);
      expect(read.fault).toBe(EPT_VIOLATION);
      expect(read.gpa).toBe(DATA_GPA);
    });

    it(`[${name}] without execute-only support, a 100b leaf is an EPT misconfiguration for a fetch and a read alike`, () => {
      const target = create({ ...bareConfig(), eptExecuteOnly: false });
      build(target, 4, 4n);
      target.vmEnter(0, { nested: "ept", root: eptp(4), vpid: 1 });
      for (const kind of [FETCH, READ]) {
        const result = target.translate(0, LA, kind);
        expect(result.fault).toBe(EPT_MISCONFIG);
        expect(result.gpa).toBe(DATA_GPA);
      }
    });

    it(`[${name}] without execute-only support, a 100b non-leaf entry is a misconfiguration too`, () => {
      const target = create({ ...bareConfig(), eptExecuteOnly: false });
      build(target, 4);
      target.writePhys64(EPT_ROOT, (target.readPhys64(EPT_ROOT) & ~7n) | 4n);
      target.vmEnter(0, { nested: "ept", root: eptp(4), vpid: 1 });
      expect(target.translate(0, LA, FETCH).fault).toBe(EPT_MISCONFIG);
    });

    it(`[${name}] without execute-only support, entries with R keep their meaning (101b allows a fetch)`, () => {
      const target = create({ ...bareConfig(), eptExecuteOnly: false });
      build(target, 4, 5n);
      target.vmEnter(0, { nested: "ept", root: eptp(4), vpid: 1 });
      expect(target.translate(0, LA, FETCH).fault).toBe(0);
    });
  }
});

describe("physical memory is the addresses below 2^MAXPHYADDR (MODEL.md §2, SDM 4.1.4)", () => {
  for (const [name, create] of IMPLEMENTATIONS) {
    for (const maxPhyAddr of [36, 46, 52]) {
      it(`[${name}] MAXPHYADDR ${maxPhyAddr}: the last quadword below 2^${maxPhyAddr} is memory; 2^${maxPhyAddr} and above are refused for writes and reads`, () => {
        const target = create({ ...bareConfig(), maxPhyAddr });
        const top = 1n << BigInt(maxPhyAddr);
        target.writePhys64(top - 8n, 0x1234n);
        expect(target.readPhys64(top - 8n)).toBe(0x1234n);
        for (const pa of [top, top + 0x1000n, (1n << 63n) - 8n]) {
          expect(() => target.writePhys64(pa, 1n)).toThrow(/MAXPHYADDR/);
          expect(() => target.readPhys64(pa)).toThrow(/MAXPHYADDR/);
        }
        // Nothing was written where the refused writes pointed, modulo the address width.
        expect(target.readPhys64(0n)).toBe(0n);
        expect(target.readPhys64(0x1000n)).toBe(0n);
      });
    }
  }
});
