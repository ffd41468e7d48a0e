// 2M host backing under overcommit and the controller's "break large pages" action: the split of a
// 2M EPT leaf into 512 4K leaves, when the controller splits, what the mechanisms do with pages of a
// 2M mapping, and the stale-translation checker around splits.
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.js";
import type { GuestVm } from "../../src/overcommit/host.js";
import { checkInvariants } from "../../src/overcommit/invariants.js";
import { makeHost } from "./helpers.js";

const NONE = { controller: false, ksm: false, balloon: false, zswap: false, swap: false };
const BASE = 0x1000_0000n;
const LARGE = 0x20_0000n;

/** The first application page of `vm` mapped by a 2M EPT leaf, with its region. */
function largeMapped(vm: GuestVm) {
  for (const gpa of [...vm.gpaToGva.keys()].sort((a, b) => (a < b ? -1 : 1))) {
    const leaf = vm.tdp.leafOf(gpa);
    if (leaf?.level === 2)
      return { gpa, region: gpa & ~(LARGE - 1n), leaf, hpa: vm.vm.largeAt(gpa) as bigint };
  }
  throw new Error("no 2M mapping");
}

describe("2M host backing under overcommit", () => {
  it("a region's first touch is backed by one 2M-aligned host page of 512 frames and mapped by a 2M EPT leaf", () => {
    const host = makeHost("identical-vms", { vms: 1, pagesPerVm: 1024, seconds: 0 }, NONE, {
      hostPageSize: "2M",
      checkInvariants: true,
    });
    host.run();
    const vm = host.vms[0];
    const { region, leaf, hpa } = largeMapped(vm);
    expect(hpa % LARGE).toBe(0n);
    expect(leaf.entry & 0x000f_ffff_ffe0_0000n).toBe(hpa);
    // Every 4K page of the region is one of the 2M page's frames, counted one by one.
    for (let i = 0n; i < 512n; i++) expect(host.frameOf(vm, region + i * 0x1000n)).toBe(hpa + i * 0x1000n);
    expect(host.frames.largePages).toBeGreaterThan(0);
    expect(host.frames.used).toBeGreaterThanOrEqual(512 * host.frames.largePages);
    expect(Number(vm.vm.backedBytes / 0x1000n)).toBeGreaterThanOrEqual(512 * vm.vm.largeCount);
    expect(() => checkInvariants(host, "boot")).not.toThrow();
  });

  it("with no 2M run free a region falls back to 4K backing, as THP does", () => {
    // 8 MiB (2,048 frames): the guest's page tables and its first two application regions take 2M
    // pages; fewer than 512 frames are left for the third.
    const host = makeHost(
      "identical-vms",
      { vms: 1, pagesPerVm: 1280, seconds: 0 },
      { ...NONE, admissionRatio: 0 },
      { hostPageSize: "2M", hostMemory: "8M", checkInvariants: true },
    );
    host.run();
    const vm = host.vms[0];
    const leaves = [...vm.gpaToGva.keys()].map((gpa) => vm.tdp.leafOf(gpa)?.level);
    expect(leaves).toContain(2);
    expect(leaves).toContain(1);
    expect(host.frames.freeFrames).toBeLessThan(512 + 5);
  });

  it('host.pageSize "1G" under overcommit is refused, naming the key', () => {
    expect(() => resolveConfig({ mode: "ept", host: { pageSize: "1G" }, overcommit: {} })).toThrow(
      /host\.pageSize/,
    );
    expect(() => resolveConfig({ mode: "ept", host: { pageSize: "2M" }, overcommit: {} })).not.toThrow();
  });
});

describe("breaking large pages", () => {
  it("breaking a large page replaces the 2M EPT leaf with 512 4K leaves to the same frames and flushes", () => {
    const host = makeHost("identical-vms", { vms: 1, pagesPerVm: 1024, seconds: 0 }, NONE, {
      hostPageSize: "2M",
    });
    host.run();
    const vm = host.vms[0];
    const { gpa, region, leaf, hpa } = largeMapped(vm);
    host.runAccesses([[0, vm.gpaToGva.get(gpa) as bigint, false]]);
    const flushes = vm.tdp.counters.remote_tlb_flush;
    const large = host.frames.largePages;
    const used = host.frames.used;
    expect(host.breakLargePage(vm, gpa, "controller")).toBe(true);
    for (let i = 0n; i < 512n; i++) {
      const small = vm.tdp.leafOf(region + i * 0x1000n);
      expect(small?.level).toBe(1);
      expect((small?.entry ?? 0n) & 0x000f_ffff_ffff_f000n).toBe(hpa + i * 0x1000n);
      // Same rights and memory type, no large bit.
      expect((small?.entry ?? 0n) & 0x7fn).toBe(leaf.entry & 0x7fn);
      expect((small?.entry ?? 0n) & 0x80n).toBe(0n);
    }
    // One INVEPT on the VM's vCPU; the split's table came from the deposit, so no frame was taken.
    expect(vm.tdp.counters.remote_tlb_flush).toBe(flushes + 1);
    expect(host.invalidationsBy.split).toBe(1);
    expect(host.exitsBy.split).toBe(0);
    expect(host.largePagesSplitBy.controller).toBe(1);
    expect(host.frames.largePages).toBe(large - 1);
    expect(host.frames.used).toBe(used);
    expect(vm.vm.largeAt(gpa)).toBeUndefined();
    // The region's pages are now single frames: one can be remapped on its own.
    expect(() => vm.vm.setBacking(region, hpa)).not.toThrow();
    expect(host.breakLargePage(vm, gpa, "controller")).toBe(false);
    expect(() => checkInvariants(host, "split")).not.toThrow();
  });

  it("the controller breaks large pages only below the high threshold", () => {
    const run = (hostMemory: string) => {
      const host = makeHost(
        "identical-vms",
        { vms: 1, pagesPerVm: 1024, seconds: 1 },
        { ...NONE, controller: {} },
        { hostPageSize: "2M", hostMemory, checkInvariants: true },
      );
      host.run();
      return host;
    };
    // 64 MiB: free memory is far above 400 % of minFree, so no large page is broken.
    const roomy = run("64M");
    expect(roomy.controller?.freeRatio).toBeGreaterThan(400);
    expect(roomy.controller?.largePagesBroken).toBe(0);
    expect(roomy.frames.largePages).toBeGreaterThan(0);
    // 7 MiB: free memory ends between 100 % and 400 % of minFree: still the high state, but below the
    // high threshold, so every 2M mapping is broken (4 a step) and nothing else happens.
    const tight = run("7M");
    const ratio = tight.controller?.freeRatio ?? 0;
    expect(ratio).toBeLessThan(400);
    expect(ratio).toBeGreaterThanOrEqual(100);
    expect(tight.controller?.state).toBe("high");
    expect(tight.controller?.largePagesBroken).toBeGreaterThan(0);
    expect(tight.controller?.largePagesBroken).toBe(tight.largePagesSplitBy.controller);
    expect(tight.frames.largePages).toBe(0);
    expect(tight.controller?.largePageInvalidations).toBe(tight.controller?.largePagesBroken);
    expect(tight.controller?.largePageExits).toBe(0);
    for (const vm of tight.vms)
      for (const gpa of vm.gpaToGva.keys()) expect(vm.tdp.leafOf(gpa)?.level ?? 1).toBe(1);
  });

  it("after a split KSM can merge a 4K page of the former 2M region", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 3, pagesPerVm: 100, seconds: 1 },
      { controller: false, balloon: false, zswap: false, swap: false },
      { hostPageSize: "2M", checkInvariants: true },
    );
    host.run();
    // KSM split each VM's 2M mapping of the image pages before merging them one by one.
    expect(host.largePagesSplitBy.ksm).toBeGreaterThan(0);
    const pages = [0, 1, 2].map((i) => {
      const vm = host.vms[i];
      const gpa = vm.gvaToGpa.get(BASE + 7n * 0x1000n) as bigint;
      return { vm, gpa, leaf: vm.tdp.leafOf(gpa), hpa: host.frameOf(vm, gpa) };
    });
    for (const page of pages) {
      expect(page.leaf?.level).toBe(1);
      expect((page.leaf?.entry ?? 0n) & 2n).toBe(0n);
      expect(page.hpa).toBe(pages[0].hpa);
      expect(page.vm.vm.largeAt(page.gpa)).toBeUndefined();
    }
    // The same sharing as with 4K backing: 50 image pages in 3 VMs.
    expect(host.ksm?.counters.pages_sharing).toBe(100);
    expect(host.invariantChecks).toBeGreaterThan(0);
  });

  it("zswap and the balloon split a 2M mapping before they take one of its pages", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 2, pagesPerVm: 1024, sharedFraction: 0.5, seconds: 0 },
      { ...NONE, zswap: {}, swap: {}, balloon: {} },
      { hostPageSize: "2M", checkInvariants: true },
    );
    host.run();
    expect(host.frames.largePages).toBeGreaterThan(0);
    host.zswap?.reclaim(16, false);
    expect(host.zswap?.counters.stored_pages).toBe(16);
    expect(host.largePagesSplitBy.zswap).toBeGreaterThan(0);
    const vm = host.vms[1];
    host.balloon?.setTarget(vm, 300);
    expect(host.largePagesSplitBy.balloon).toBeGreaterThan(0);
    expect(() => checkInvariants(host, "reclaim")).not.toThrow();
  });
});

describe("no stale translation after splits (the invariant checker)", () => {
  it("runs after every split of memory-hog under the vSphere policy with 2M backing", () => {
    const host = makeHost(
      "memory-hog",
      { pagesPerVm: 1024, records: 30_000, seconds: 1 },
      { controller: { intervalMs: 10 } },
      { hostMemory: "24M", hostPageSize: "2M", checkInvariants: true },
    );
    host.run();
    expect(host.controller?.largePagesBroken).toBeGreaterThan(0);
    expect(host.invariantChecks).toBeGreaterThan(10);
    expect(() => checkInvariants(host, "end")).not.toThrow();
  });

  it("flags a 4K remap in a split region whose 2M translation was never shot down", () => {
    const host = makeHost("identical-vms", { vms: 1, pagesPerVm: 1024, seconds: 0 }, NONE, {
      hostPageSize: "2M",
    });
    host.run();
    const vm = host.vms[0];
    const { gpa, region, hpa } = largeMapped(vm);
    const other = gpa === region ? region + 0x1000n : region;
    host.runAccesses([
      [0, vm.gpaToGva.get(gpa) as bigint, false],
      [0, vm.gpaToGva.get(other) as bigint, false],
    ]);
    // The split without its INVEPT: the same frames with the same rights, so nothing is stale yet.
    vm.tdp.splitLarge(gpa);
    vm.vm.splitLarge(gpa);
    host.frames.splitLarge(hpa);
    expect(() => checkInvariants(host, "split without flush")).not.toThrow();
    // Remapping one 4K page of it is: a cached translation still reaches the old frame.
    const fresh = host.frames.alloc("4K");
    vm.tdp.mapPage(gpa, fresh, true);
    vm.vm.setBacking(gpa & ~0xfffn, fresh);
    expect(() => checkInvariants(host, "remap without flush")).toThrow(/EPT to 0x|no longer maps/);
    host.flush(vm, "split");
    expect(() => checkInvariants(host, "after flush")).not.toThrow();
  });
});
