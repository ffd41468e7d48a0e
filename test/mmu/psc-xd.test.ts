import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/config.js";
import { IMPLEMENTATIONS } from "./implementations.js";

// Found by the differential test: a PSC entry keeps the XD it accumulated (MODEL.md §7.1, §7.2), and
// clearing EFER.NXE afterwards only changes how the entries read later are judged (§5.2 step 3).
for (const implementation of IMPLEMENTATIONS) {
  describe(`${implementation.name}: MODEL.md §7 paging-structure caches`, () => {
    it("XD cached in a PDPTE-cache entry still forbids fetches after EFER.NXE is cleared without a flush", () => {
      const config = defaultConfig().machine;
      config.tlb = { l1d: null, l1i: null, l2: null };
      config.psc = {
        latency: 0,
        pml5: null,
        pml4: null,
        pdpte: { entries: 8, ways: 1, policy: "lru" },
        pde: null,
      };
      const mmu = implementation.create(config);
      // PML4 at 0x1000 -> PDPT 0x2000 (XD) -> PD 0x3000 -> PT 0x4000 -> frame 0x9000, all user-writable.
      mmu.writePhys64(0x1000n, 0x2000n | 0x7n);
      mmu.writePhys64(0x2000n, 0x3000n | 0x7n | (1n << 63n));
      mmu.writePhys64(0x3000n, 0x4000n | 0x7n);
      mmu.writePhys64(0x4000n, 0x9000n | 0x7n);
      mmu.setRegs(0, { cr3: 0x1000n, efer: 0xd00n, cpl: 3 });
      expect(mmu.access(0, 0n, 0).fault).toBe(0);
      mmu.setRegs(0, { efer: 0x500n });
      const fetch = mmu.access(0, 0x10n, 2);
      expect(fetch.fault).toBe(14);
      // A protection fault (P=1) by a user access; I/D is clear with NXE and SMEP both off.
      expect(fetch.errorCode).toBe(0b101);
    });
  });
}
