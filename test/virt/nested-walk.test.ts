import { describe, expect, it } from "vitest";
import { Machine } from "../../src/core/machine.js";
import type { PageSize } from "../../src/core/types.js";
import { bareConfig, HOST_OFFSET, SIZE, TwoDimensional } from "./harness.js";

const READ = 0;
const WRITE = 1;
const FETCH = 2;
const EPT_VIOLATION = 48;
const EPT_MISCONFIG = 49;
const NPF = 0x400;
const PF = 14;
const LA = 0x7f40_0000_0000n;
const DATA_GPA = 0x4000_0000n;

interface Pairing {
  guest: PageSize;
  host: PageSize;
  guestLevels: 4 | 5;
  hostLevels: 4 | 5;
  refs: number;
}

// docs/ept-npt.md §Two-dimensional walk cost: (n+1)(m+1)-1 references, n guest levels and m nested levels,
// with every cache off.
const PAIRINGS: Pairing[] = [
  { guest: "4K", host: "4K", guestLevels: 4, hostLevels: 4, refs: 24 },
  { guest: "4K", host: "4K", guestLevels: 5, hostLevels: 5, refs: 35 },
  { guest: "4K", host: "4K", guestLevels: 4, hostLevels: 5, refs: 29 },
  { guest: "4K", host: "4K", guestLevels: 5, hostLevels: 4, refs: 29 },
  { guest: "2M", host: "4K", guestLevels: 4, hostLevels: 4, refs: 19 },
  { guest: "4K", host: "2M", guestLevels: 4, hostLevels: 4, refs: 19 },
  { guest: "2M", host: "2M", guestLevels: 4, hostLevels: 4, refs: 15 },
  { guest: "4K", host: "1G", guestLevels: 4, hostLevels: 4, refs: 14 },
  { guest: "1G", host: "1G", guestLevels: 4, hostLevels: 4, refs: 8 },
];

function setup(nested: "ept" | "npt", pairing: Pairing): TwoDimensional {
  const machine = new TwoDimensional(nested, pairing.hostLevels, pairing.guestLevels);
  machine.mapGuest(LA, DATA_GPA, pairing.guest, 0x7n, pairing.host);
  machine.mapNested(DATA_GPA, pairing.host);
  return machine;
}

for (const nested of ["ept", "npt"] as const) {
  describe(`${nested.toUpperCase()}: the two-dimensional walk (docs/ept-npt.md §Two-dimensional walk cost)`, () => {
    for (const pairing of PAIRINGS) {
      it(`a ${pairing.guestLevels}-level guest with ${pairing.guest} pages on ${pairing.hostLevels}-level ${nested} with ${pairing.host} pages makes ${pairing.refs} references with every cache off`, () => {
        const two = setup(nested, pairing);
        const result = two.machine.translate(0, LA + 0x123n, READ);
        expect(result.fault).toBe(0);
        expect(result.pa).toBe(DATA_GPA + HOST_OFFSET + 0x123n);
        expect(result.refs).toBe(pairing.refs);
        // The nested dimension makes all but the guest's own n reads.
        const guestReads =
          pairing.guestLevels - (pairing.guest === "4K" ? 0 : pairing.guest === "2M" ? 1 : 2);
        expect(result.nestedRefs).toBe(pairing.refs - guestReads);
        expect(two.machine.stats().walkRefs).toBe(pairing.refs);
      });
    }

    it("a combined TLB entry maps the smaller page: a 2M guest page on 4K nested pages is cached as 4K", () => {
      const config = bareConfig();
      config.tlb.l1d = { latency: 1, arrays: [{ sizes: ["4K", "2M"], entries: 16, ways: 4, policy: "lru" }] };
      const two = new TwoDimensional(nested, 4, 4, config);
      two.mapGuest(LA, DATA_GPA, "2M");
      two.mapNested(DATA_GPA, "4K");
      two.mapNested(DATA_GPA + 0x1000n, "4K");
      expect(two.machine.translate(0, LA, READ).pageSize).toBe(4096);
      expect(two.machine.translate(0, LA + 8n, READ).refs).toBe(0);
      // The next 4K of the guest's 2M page is another combined entry: it walks again.
      expect(two.machine.translate(0, LA + 0x1000n, READ).refs).toBeGreaterThan(0);
    });

    it("a guest #PF under nested paging is the guest's fault, with its own error code, not a nested exit", () => {
      const two = setup(nested, PAIRINGS[0]);
      const result = two.machine.translate(0, LA + 0x1000n, WRITE);
      expect(result.fault).toBe(PF);
      expect(result.errorCode).toBe(0b110);
    });

    it("the nested TLB caches guest-physical translations: a second walk makes only the guest's 4 references", () => {
      const config = bareConfig();
      config.nestedTlb = {
        latency: 1,
        arrays: [{ sizes: ["4K", "2M", "1G"], entries: 64, ways: 4, policy: "lru" }],
      };
      const two = new TwoDimensional(nested, 4, 4, config);
      two.mapGuest(LA, DATA_GPA);
      two.mapNested(DATA_GPA);
      expect(two.machine.translate(0, LA, READ).refs).toBe(24);
      const again = two.machine.translate(0, LA, READ);
      expect(again.refs).toBe(4);
      expect(again.nestedRefs).toBe(0);
      expect(two.machine.nestedStats().nestedTlb.hits).toBe(5);
    });

    it("nested paging-structure caches let a nested walk start below the root", () => {
      const config = bareConfig();
      config.nestedPsc = {
        latency: 2,
        pml5: null,
        pml4: null,
        pdpte: null,
        pde: { entries: 16, ways: 4, policy: "lru" },
      };
      const two = new TwoDimensional(nested, 4, 4, config);
      two.mapGuest(LA, DATA_GPA);
      two.mapNested(DATA_GPA);
      two.machine.translate(0, LA, READ);
      // Every GPA of the second walk hits the nested PDE cache: 5 nested walks of 1 reference.
      expect(two.machine.translate(0, LA, READ).refs).toBe(4 + 5);
    });
  });
}

describe("EPT violations (SDM Vol. 3C §29.3.3.2) and their exit qualification (docs/ept-npt.md §Exit qualification)", () => {
  it("an EPT violation on a guest page-table read sets qualification bit 0 and clears bit 8", () => {
    const two = setup("ept", PAIRINGS[0]);
    // The guest PDPT's page loses its nested mapping.
    const pdpt = two.readGuest(two.guestRoot + ((LA >> 39n) & 0x1ffn) * 8n) & 0x000f_ffff_ffff_f000n;
    two.mapNested(pdpt, "4K", 0n, 0n);
    const result = two.machine.translate(0, LA, READ);
    expect(result.fault).toBe(EPT_VIOLATION);
    const q = result.errorCode;
    expect(q & 1).toBe(1);
    expect(q & 2).toBe(0);
    expect((q >> 8) & 1).toBe(0);
    // Bit 7: the guest linear address is valid. Bits 5:3: the AND of the entries' RWX (not present: 0).
    expect((q >> 7) & 1).toBe(1);
    expect((q >> 3) & 7).toBe(0);
    expect(result.gpa).toBe(pdpt + ((LA >> 30n) & 0x1ffn) * 8n);
  });

  it("with EPT A/D on, a guest page-table access that faults reports a write as well as a read (bits 0 and 1)", () => {
    const two = new TwoDimensional("ept", 4, 4, bareConfig(), { accessedDirty: true });
    two.mapGuest(LA, DATA_GPA);
    two.mapNested(DATA_GPA);
    two.mapNested(two.guestRoot, "4K", 5n);
    const result = two.machine.translate(0, LA, READ);
    expect(result.fault).toBe(EPT_VIOLATION);
    expect(result.errorCode & 7).toBe(3);
    // R and X are allowed by the entry; the write is not.
    expect((result.errorCode >> 3) & 7).toBe(5);
  });

  it("a write to a read-only EPT page is a final-translation violation: bits 1, 3, 5, 8 and the guest rights in 9-11", () => {
    const two = setup("ept", PAIRINGS[0]);
    two.mapNested(DATA_GPA, "4K", 5n);
    const result = two.machine.translate(0, LA + 8n, WRITE);
    expect(result.fault).toBe(EPT_VIOLATION);
    const q = result.errorCode;
    expect(q & 7).toBe(2);
    expect((q >> 3) & 7).toBe(5);
    expect((q >> 8) & 1).toBe(1);
    // The guest maps the page user, writable and executable: U/S=1, R/W=1, XD=0.
    expect((q >> 9) & 7).toBe(3);
    expect(result.gpa).toBe(DATA_GPA + 8n);
  });

  it("a fetch from a page without EPT X sets qualification bit 2", () => {
    const two = setup("ept", PAIRINGS[0]);
    two.mapNested(DATA_GPA, "4K", 3n);
    const result = two.machine.translate(0, LA, FETCH);
    expect(result.fault).toBe(EPT_VIOLATION);
    expect(result.errorCode & 7).toBe(4);
  });

  it("an execute-only EPT page (X without R, supported) can be fetched but not read", () => {
    const two = setup("ept", PAIRINGS[0]);
    two.mapNested(DATA_GPA, "4K", 4n);
    expect(two.machine.translate(0, LA, FETCH).fault).toBe(0);
    expect(two.machine.translate(0, LA, READ).fault).toBe(EPT_VIOLATION);
  });

  it("an EPT violation is a VM exit: the exit record carries the reason, the GPA and the linear address", () => {
    const two = setup("ept", PAIRINGS[0]);
    two.mapNested(DATA_GPA, "4K", 0n, 0n);
    const view = two.machine.recordView();
    view.setBigUint64(0, LA + 0x10n, true);
    view.setUint8(8, READ);
    expect(two.machine.replay(0, 1)).toBe(0);
    const exit = two.machine.exit();
    expect(exit.reason).toBe("eptViolation");
    expect(exit.guestPhysical).toBe(DATA_GPA + 0x10n);
    expect(exit.linear).toBe(LA + 0x10n);
    expect(two.machine.nestedStats().exitsByReason.eptViolation).toBe(1);
  });
});

describe("EPT misconfigurations (SDM Vol. 3C §29.3.3.1)", () => {
  const cases: [string, (two: TwoDimensional) => void][] = [
    ["a write-only leaf (bits 2:0 = 010b)", (two) => two.mapNested(DATA_GPA, "4K", 2n)],
    ["a write+execute leaf without read (110b)", (two) => two.mapNested(DATA_GPA, "4K", 6n)],
    [
      "a leaf with memory type 2",
      (two) => two.mapNested(DATA_GPA, "4K", 7n, (DATA_GPA + HOST_OFFSET) | 7n | (2n << 3n)),
    ],
    [
      "a leaf with memory type 3",
      (two) => two.mapNested(DATA_GPA, "4K", 7n, (DATA_GPA + HOST_OFFSET) | 7n | (3n << 3n)),
    ],
    [
      "a leaf with memory type 7",
      (two) => two.mapNested(DATA_GPA, "4K", 7n, (DATA_GPA + HOST_OFFSET) | 7n | (7n << 3n)),
    ],
    [
      "an address bit at or above MAXPHYADDR",
      (two) => two.mapNested(DATA_GPA, "4K", 7n, (1n << 50n) | 7n | (6n << 3n)),
    ],
    [
      "a 2M leaf with a bit set in 20:12",
      (two) =>
        two.mapNested(DATA_GPA, "2M", 7n, (DATA_GPA + HOST_OFFSET) | 0x1000n | 0x80n | 7n | (6n << 3n)),
    ],
  ];
  for (const [name, corrupt] of cases) {
    it(`${name} is a misconfiguration exit, never a crash`, () => {
      const two = setup("ept", PAIRINGS[0]);
      corrupt(two);
      const result = two.machine.translate(0, LA, READ);
      expect(result.fault).toBe(EPT_MISCONFIG);
      expect(result.gpa).toBe(DATA_GPA);
    });
  }

  it("reserved bits 6:3 in a non-leaf EPT entry are a misconfiguration", () => {
    const two = setup("ept", PAIRINGS[0]);
    const pml4e = two.nestedRoot + ((DATA_GPA >> 39n) & 0x1ffn) * 8n;
    two.machine.writePhys64(pml4e, two.machine.readPhys64(pml4e) | (1n << 4n));
    expect(two.machine.translate(0, LA, READ).fault).toBe(EPT_MISCONFIG);
  });

  it("bit 7 (large page) in an EPT PML4E is a misconfiguration", () => {
    const two = setup("ept", PAIRINGS[0]);
    const pml4e = two.nestedRoot + ((DATA_GPA >> 39n) & 0x1ffn) * 8n;
    two.machine.writePhys64(pml4e, two.machine.readPhys64(pml4e) | 0x80n);
    expect(two.machine.translate(0, LA, READ).fault).toBe(EPT_MISCONFIG);
  });
});

describe("EPT accessed and dirty flags (docs/ept-npt.md §EPT accessed and dirty flags)", () => {
  it("with EPTP bit 6 the walk sets A (bit 8) in every EPT entry used and D (bit 9) in the leaf of a write", () => {
    const two = new TwoDimensional("ept", 4, 4, bareConfig(), { accessedDirty: true });
    two.mapGuest(LA, DATA_GPA);
    const leaf = two.mapNested(DATA_GPA);
    two.machine.translate(0, LA, READ);
    expect((two.machine.readPhys64(leaf) >> 8n) & 3n).toBe(1n);
    two.machine.translate(0, LA, WRITE);
    expect((two.machine.readPhys64(leaf) >> 8n) & 3n).toBe(3n);
  });

  it("with EPT A/D on, guest page-table accesses count as writes: their EPT leaves become dirty", () => {
    const two = new TwoDimensional("ept", 4, 4, bareConfig(), { accessedDirty: true });
    two.mapGuest(LA, DATA_GPA);
    two.mapNested(DATA_GPA);
    const rootLeaf = two.mapNested(two.guestRoot);
    two.machine.translate(0, LA, READ);
    expect((two.machine.readPhys64(rootLeaf) >> 9n) & 1n).toBe(1n);
  });

  it("without EPT A/D, setting a guest A bit in a table EPT maps read-only is an EPT violation (write, bit 8 clear)", () => {
    const two = setup("ept", PAIRINGS[0]);
    two.mapNested(two.guestRoot, "4K", 5n);
    const result = two.machine.translate(0, LA, READ);
    expect(result.fault).toBe(EPT_VIOLATION);
    expect(result.errorCode & 7).toBe(2);
    expect((result.errorCode >> 8) & 1).toBe(0);
    // Nothing was written: the guest PML4E's A bit is still clear.
    expect(two.readGuest(two.guestRoot + ((LA >> 39n) & 0x1ffn) * 8n) & 0x20n).toBe(0n);
  });
});

describe("AMD #NPF (docs/ept-npt.md §#NPF)", () => {
  it("a not-present final GPA gives EXITINFO1 = U with bit 32, and EXITINFO2 = the GPA", () => {
    const two = setup("npt", PAIRINGS[0]);
    two.mapNested(DATA_GPA, "4K", 0n, 0n);
    const result = two.machine.translate(0, LA + 0x40n, READ);
    expect(result.fault).toBe(NPF);
    expect(result.errorCode).toBe(4 + 2 ** 32);
    expect(result.gpa).toBe(DATA_GPA + 0x40n);
  });

  it("a guest page-table access that faults sets bit 33 and W: NPT walks guest tables as read-modify-writes", () => {
    const two = setup("npt", PAIRINGS[0]);
    two.mapNested(two.guestRoot, "4K", 0n, 0n);
    const result = two.machine.translate(0, LA, READ);
    expect(result.fault).toBe(NPF);
    expect(result.errorCode).toBe(2 + 4 + 2 ** 33);
  });

  it("a nested entry without U is a protection #NPF: every nested access is a user access", () => {
    const two = setup("npt", PAIRINGS[0]);
    two.mapNested(DATA_GPA, "4K", 7n, (DATA_GPA + HOST_OFFSET) | 0x3n);
    const result = two.machine.translate(0, LA, WRITE);
    expect(result.fault).toBe(NPF);
    expect(result.errorCode).toBe(1 + 2 + 4 + 2 ** 32);
  });

  it("a reserved bit in a nested entry sets RSVD and P", () => {
    const two = setup("npt", PAIRINGS[0]);
    two.mapNested(DATA_GPA, "4K", 7n, (DATA_GPA + HOST_OFFSET) | 0x7n | (1n << 50n));
    const result = two.machine.translate(0, LA, FETCH);
    expect(result.fault).toBe(NPF);
    expect(result.errorCode).toBe(1 + 4 + 8 + 16 + 2 ** 32);
  });

  it("NPT keeps x86 A/D in nested entries: A on every level, D on the leaf of a write", () => {
    const two = setup("npt", PAIRINGS[0]);
    const leaf = two.mapNested(DATA_GPA);
    two.machine.translate(0, LA, WRITE);
    expect(two.machine.readPhys64(leaf) & 0x60n).toBe(0x60n);
  });
});

describe("invalidating virtualized translations (docs/ept-npt.md §VPIDs and cached mappings, §ASIDs and TLB_CONTROL)", () => {
  function cached(nested: "ept" | "npt", vpid = 1) {
    const config = bareConfig();
    config.tlb.l1d = { latency: 1, arrays: [{ sizes: ["4K"], entries: 16, ways: 4, policy: "lru" }] };
    config.nestedTlb = {
      latency: 1,
      arrays: [{ sizes: ["4K", "2M", "1G"], entries: 64, ways: 4, policy: "lru" }],
    };
    const two = new TwoDimensional(nested, 4, 4, config, { vpid });
    two.mapGuest(LA, DATA_GPA);
    two.mapNested(DATA_GPA);
    two.machine.translate(0, LA, READ);
    expect(two.machine.translate(0, LA, READ).refs).toBe(0);
    return two;
  }

  it("INVEPT single-context removes the combined and guest-physical mappings of that EP4TA", () => {
    const two = cached("ept");
    expect(two.machine.invept(0, 1, two.rootValue)).toBe(true);
    expect(two.machine.translate(0, LA, READ).refs).toBe(24);
  });

  it("INVEPT all-context does too; an unsupported INVEPT type fails", () => {
    const two = cached("ept");
    expect(two.machine.invept(0, 3)).toBe(false);
    expect(two.machine.translate(0, LA, READ).refs).toBe(0);
    expect(two.machine.invept(0, 2)).toBe(true);
    expect(two.machine.translate(0, LA, READ).refs).toBe(24);
  });

  it("INVVPID single-context removes the VPID's combined mappings but keeps guest-physical ones", () => {
    const two = cached("ept", 5);
    expect(two.machine.invvpid(0, 1, 5)).toBe(true);
    // The guest walk repeats (4 references); every GPA still hits the nested TLB.
    expect(two.machine.translate(0, LA, READ).refs).toBe(4);
  });

  it("INVVPID of another VPID leaves this guest's entries, and VPID 0 with type 1 fails", () => {
    const two = cached("ept", 5);
    expect(two.machine.invvpid(0, 1, 6)).toBe(true);
    expect(two.machine.invvpid(0, 1, 0)).toBe(false);
    expect(two.machine.translate(0, LA, READ).refs).toBe(0);
  });

  it("INVVPID type 0 removes one address; type 2 every VPID but 0; type 3 keeps global entries", () => {
    const two = cached("ept", 5);
    expect(two.machine.invvpid(0, 0, 5, LA + 0x1000n)).toBe(true);
    expect(two.machine.translate(0, LA, READ).refs).toBe(0);
    expect(two.machine.invvpid(0, 0, 5, LA)).toBe(true);
    expect(two.machine.translate(0, LA, READ).refs).toBe(4);
    expect(two.machine.invvpid(0, 2, 0)).toBe(true);
    expect(two.machine.translate(0, LA, READ).refs).toBe(4);
  });

  it("NPT TLB_CONTROL 3 flushes the guest's ASID, nested translations included; 0 flushes nothing", () => {
    const two = cached("npt", 9);
    expect(two.machine.tlbControl(0, 0)).toBe(true);
    expect(two.machine.translate(0, LA, READ).refs).toBe(0);
    expect(two.machine.tlbControl(0, 3)).toBe(true);
    expect(two.machine.translate(0, LA, READ).refs).toBe(24);
    expect(two.machine.tlbControl(0, 2)).toBe(false);
  });

  it("without VPIDs every VM exit and entry flushes the guest's TLB entries (VPID 0)", () => {
    const two = cached("ept", 0);
    two.machine.vmExitEntry(0);
    // Guest-physical mappings survive: they are tagged by EP4TA, not VPID.
    expect(two.machine.translate(0, LA, READ).refs).toBe(4);
  });

  it("with a VPID the guest's entries survive exits", () => {
    const two = cached("ept", 3);
    two.machine.vmExitEntry(0);
    expect(two.machine.translate(0, LA, READ).refs).toBe(0);
  });

  it("a guest INVLPG reaches its VPID's combined mappings", () => {
    const two = cached("ept", 3);
    two.machine.invlpg(0, LA);
    expect(two.machine.translate(0, LA, READ).refs).toBe(4);
  });
});

describe("isolation under nested paging", () => {
  it("whatever the guest writes in its page tables, translations land only in host frames its EPT maps", () => {
    const two = setup("ept", PAIRINGS[0]);
    // The guest points its PTE at a GPA the EPT does not map (host memory beyond the VM): a violation,
    // not a translation into the host.
    const pte = two.mapGuest(LA, 0x7_0000_0000n);
    expect(pte).toBeGreaterThan(0n);
    const result = two.machine.translate(0, LA, READ);
    expect(result.fault).toBe(EPT_VIOLATION);
    expect(result.gpa).toBe(0x7_0000_0000n);
    expect(SIZE["4K"]).toBe(0x1000n);
  });
});

// The core remembers fault-free nested walks of guest page-table pages (a simulator shortcut keyed by
// the memory generation). These rules pin down that the shortcut never changes what the walk does.
describe("repeated nested walks of guest page-table pages", () => {
  it("a repeated walk makes the same 24 references and prices the same lines", () => {
    const two = setup("ept", PAIRINGS[0]);
    const first = two.machine.translate(0, LA, READ);
    const second = two.machine.translate(0, LA, READ);
    expect(second.refs).toBe(24);
    expect(second.nestedRefs).toBe(first.nestedRefs);
    expect(second.cycles).toBeLessThanOrEqual(first.cycles);
    expect(two.machine.stats().walkRefs).toBe(48);
  });

  for (const nested of ["ept", "npt"] as const) {
    it(`${nested.toUpperCase()}: after the host rewrites the nested entry of a guest table page, the next walk reads the new entry`, () => {
      const two = setup(nested, PAIRINGS[0]);
      expect(two.machine.translate(0, LA, READ).fault).toBe(0);
      // Revoke the guest PML4 page's nested mapping: the same walk now faults on its first access.
      two.mapNested(two.guestRoot, "4K", 0n, 0n);
      const result = two.machine.translate(0, LA, READ);
      expect(result.fault).toBe(nested === "ept" ? EPT_VIOLATION : NPF);
      expect(result.gpa).toBe(two.guestRoot + ((LA >> 39n) & 0x1ffn) * 8n);
    });

    it(`${nested.toUpperCase()}: after the host moves a guest table page, the walk follows the new host frame`, () => {
      const two = setup(nested, PAIRINGS[0]);
      expect(two.machine.translate(0, LA, READ).fault).toBe(0);
      // Copy the guest PML4 to another host frame and point its nested leaf there; then clobber the old copy.
      const moved = 0x20_0000_0000n;
      const index = (LA >> 39n) & 0x1ffn;
      const entry = two.readGuest(two.guestRoot + index * 8n);
      two.machine.writePhys64(moved + index * 8n, entry);
      two.mapNested(two.guestRoot, "4K", 7n, moved | two.nestedLeafBits(7n, "4K"));
      two.writeGuest(two.guestRoot + index * 8n, 0n);
      const result = two.machine.translate(0, LA, READ);
      expect(result.fault).toBe(0);
      expect(result.pa).toBe(DATA_GPA + HOST_OFFSET);
    });
  }

  it("with EPT A/D on, a repeated walk sets the accessed flag again after the host clears it", () => {
    const two = new TwoDimensional("ept", 4, 4, bareConfig(), { accessedDirty: true });
    two.mapGuest(LA, DATA_GPA);
    two.mapNested(DATA_GPA);
    two.machine.translate(0, LA, READ);
    const leaf = two.mapNested(two.guestRoot);
    const before = two.machine.stats().adUpdates;
    // mapNested rewrote the leaf without A: the walk must set bit 8 again, as one more A/D update.
    expect(two.machine.readPhys64(leaf) & (1n << 8n)).toBe(0n);
    expect(two.machine.translate(0, LA, READ).fault).toBe(0);
    expect(two.machine.readPhys64(leaf) & (1n << 8n)).toBe(1n << 8n);
    expect(two.machine.stats().adUpdates).toBe(before + 1);
  });
});

// The core also remembers guest walks from the top down to the page-directory entry, by 2 MiB region,
// where no cache stands in between. A remembered walk must still follow every change to memory.
describe("repeated walks in one 2 MiB region (the walk memo)", () => {
  for (const nested of ["ept", "npt"] as const) {
    it(`${nested.toUpperCase()}: a neighbouring page's walk makes the full 24 references, priced alike`, () => {
      const two = setup(nested, PAIRINGS[0]);
      two.mapGuest(LA + 0x1000n, DATA_GPA + 0x1000n);
      two.mapNested(DATA_GPA + 0x1000n);
      expect(two.machine.translate(0, LA, READ).refs).toBe(24);
      expect(two.machine.translate(0, LA, READ).refs).toBe(24);
      const neighbour = two.machine.translate(0, LA + 0x1000n, READ);
      expect(neighbour.fault).toBe(0);
      expect(neighbour.refs).toBe(24);
      expect(neighbour.nestedRefs).toBe(20);
      expect(neighbour.pa).toBe(DATA_GPA + 0x1000n + HOST_OFFSET);
    });

    it(`${nested.toUpperCase()}: after the guest rewrites its page-directory entry, the next walk follows the new page table`, () => {
      const two = setup(nested, PAIRINGS[0]);
      expect(two.machine.translate(0, LA, READ).fault).toBe(0);
      expect(two.machine.translate(0, LA, READ).fault).toBe(0);
      // A second page table mapping LA's page elsewhere, swapped in at the PDE.
      const oldPde = (() => {
        let table = two.guestRoot;
        for (let level = 4; level > 2; level--)
          table =
            two.readGuest(table + ((LA >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n) &
            0x000f_ffff_ffff_f000n;
        return table + ((LA >> 21n) & 0x1ffn) * 8n;
      })();
      const newTable = two.guestTable();
      two.mapNested(newTable);
      two.mapNested(DATA_GPA + 0x5000n);
      two.writeGuest(newTable + ((LA >> 12n) & 0x1ffn) * 8n, (DATA_GPA + 0x5000n) | 0x67n);
      two.writeGuest(oldPde, newTable | 0x67n);
      const result = two.machine.translate(0, LA, READ);
      expect(result.fault).toBe(0);
      expect(result.pa).toBe(DATA_GPA + 0x5000n + HOST_OFFSET);
    });
  }

  it("natively too: after a PDE rewrite the walk follows the new page table", () => {
    const machine = new Machine(bareConfig());
    const root = 0x10_0000n;
    const pdpt = 0x10_1000n;
    const pd = 0x10_2000n;
    const pt = 0x10_3000n;
    const other = 0x10_4000n;
    const la = 0x4000_0000n;
    machine.writePhys64(root, pdpt | 7n);
    machine.writePhys64(pdpt + 8n, pd | 0x27n);
    machine.writePhys64(pd, pt | 0x27n);
    machine.writePhys64(pt, 0x20_0000n | 0x67n);
    machine.writePhys64(other, 0x30_0000n | 0x67n);
    machine.setRegs(0, { cr0: 0x8001_0001n, cr3: root, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
    expect(machine.translate(0, la, READ).pa).toBe(0x20_0000n);
    expect(machine.translate(0, la, READ).pa).toBe(0x20_0000n);
    machine.writePhys64(pd, other | 0x27n);
    const result = machine.translate(0, la, READ);
    expect(result.pa).toBe(0x30_0000n);
    expect(result.refs).toBe(4);
  });
});
