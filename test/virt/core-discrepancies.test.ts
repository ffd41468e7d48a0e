// Cases where the WebAssembly core once departed from docs/MODEL.md §12, found by the nested
// differential property (test/mmu/nested-differential.test.ts) and kept as regression tests. Each runs
// against the core and the reference model.

import { describe, expect, it } from "vitest";
import type { MachineConfig, PscConfig } from "../../src/core/types.js";
import { bareConfig, IMPLEMENTATIONS, type Target } from "./harness.js";

const READ = 0;
const FETCH = 2;
const EPT_VIOLATION = 48;
const NPF = 0x400;
const HOST_OFFSET = 0x10_0000_0000n;
const NESTED_ROOT = 0x1000_0000n;
const GUEST_ROOT = 0x100_0000n;
const LA = 0x7f40_0000_0000n;

/**
 * A 4-level guest on 4-level EPT or NPT, every guest-physical page mapped 4K at gpa + HOST_OFFSET with
 * all rights, the guest tables at GUEST_ROOT.., and `la` mapped (user, writable, executable) to `gpa`.
 */
function twoDimensional(target: Target, nested: "ept" | "npt", gpa: bigint): void {
  let nextHostTable = NESTED_ROOT + 0x1000n;
  let nextGuestTable = GUEST_ROOT + 0x1000n;
  const index = (address: bigint, level: number) => (address >> BigInt(12 + 9 * (level - 1))) & 0x1ffn;
  const mapNested = (page: bigint) => {
    let table = NESTED_ROOT;
    for (let level = 4; level > 1; level--) {
      const slot = table + index(page, level) * 8n;
      let entry = target.readPhys64(slot);
      if (entry === 0n) {
        entry = nextHostTable | 7n; // EPT RWX / NPT P+RW+US
        nextHostTable += 0x1000n;
        target.writePhys64(slot, entry);
      }
      table = entry & 0x000f_ffff_ffff_f000n;
    }
    // EPT: RWX, write-back. NPT: present, writable, user.
    target.writePhys64(table + index(page, 1) * 8n, (page + HOST_OFFSET) | (nested === "ept" ? 0x37n : 7n));
  };
  mapNested(GUEST_ROOT);
  let table = GUEST_ROOT;
  for (let level = 4; level > 1; level--) {
    const child = nextGuestTable;
    nextGuestTable += 0x1000n;
    mapNested(child);
    target.writePhys64(table + HOST_OFFSET + index(LA, level) * 8n, child | 7n);
    table = child;
  }
  target.writePhys64(table + HOST_OFFSET + index(LA, 1) * 8n, gpa | 7n);
  mapNested(gpa);
  target.setRegs(0, { cr0: 0x8001_0001n, cr3: GUEST_ROOT, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
  // EPTP: write-back, 4-level walk (0x1e); nCR3 with the host's 4 levels.
  target.vmEnter(
    0,
    nested === "ept"
      ? { nested, root: NESTED_ROOT | 0x1en, vpid: 1 }
      : { nested, root: NESTED_ROOT, vpid: 1 },
  );
}

/** Removes X from the nested PML4E that maps every guest-physical address of these cases. */
function denyExecuteAtTheTop(target: Target, nested: "ept" | "npt"): void {
  const pml4e = target.readPhys64(NESTED_ROOT);
  target.writePhys64(NESTED_ROOT, nested === "ept" ? (pml4e & ~7n) | 3n : pml4e | (1n << 63n));
}

function nestedPscs(levels: (keyof Omit<PscConfig, "latency">)[]): MachineConfig {
  const config = bareConfig();
  config.nestedPsc = { latency: 0, pml5: null, pml4: null, pdpte: null, pde: null };
  for (const level of levels) config.nestedPsc[level] = { entries: 4, ways: 4, policy: "lru" };
  return config;
}

describe("core discrepancies with MODEL.md §12", () => {
  for (const [name, create] of IMPLEMENTATIONS) {
    for (const nested of ["ept", "npt"] as const) {
      for (const levels of [
        ["pdpte", "pde"],
        ["pml4", "pde"],
      ] as const) {
        it(`[${name}] ${nested.toUpperCase()} with nested ${levels.join("+")} PSCs: nested PSC fills keep the accumulated rights of the PSC hit the walk started from (§12.1 steps 2 and 5, §7.2-7.3)`, () => {
          // The data page sits in the guest tables' GiB but another 2 MiB: its first nested walk starts
          // from a hit on the cached upper entry (whose accumulated rights lack X), reads the PDE and PTE
          // and fills the nested PDE cache. That entry must carry the accumulated rights (no X), so a
          // fetch through it is still a nested fault.
          const target = create(nestedPscs([...levels]));
          twoDimensional(target, nested, 0x3000_0000n);
          denyExecuteAtTheTop(target, nested);
          expect(target.translate(0, LA, READ).fault).toBe(0);
          const fetch = target.translate(0, LA, FETCH);
          if (nested === "ept") {
            expect(fetch.fault).toBe(EPT_VIOLATION);
            // Bits 2:0 = fetch; bits 5:3 = the AND of the walk's rights (RW); bits 7 and 8.
            expect(fetch.errorCode & 0x1ff).toBe(4 | (3 << 3) | 0x80 | 0x100);
          } else {
            expect(fetch.fault).toBe(NPF);
            // P, U, I/D and bit 32 (final translation).
            expect(fetch.errorCode).toBe(1 + 4 + 16 + 2 ** 32);
          }
          expect(fetch.gpa).toBe(0x3000_0000n);
        });
      }

      it(`[${name}] ${nested.toUpperCase()} without nested PSCs: the same fetch is a nested fault (control)`, () => {
        const target = create(bareConfig());
        twoDimensional(target, nested, 0x3000_0000n);
        denyExecuteAtTheTop(target, nested);
        expect(target.translate(0, LA, READ).fault).toBe(0);
        expect(target.translate(0, LA, FETCH).fault).toBe(nested === "ept" ? EPT_VIOLATION : NPF);
      });
    }
  }
});
