// KSM on the overcommitted host (docs/overcommit.md §KSM): the exactness cases, what a merge does to the EPT
// and the TLBs, COW breaks, and the isolation property.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { imageContent } from "../../src/overcommit/content.js";
import type { OvercommitHost } from "../../src/overcommit/host.js";
import { checkInvariants } from "../../src/overcommit/invariants.js";
import { makeHost } from "./helpers.js";

const ONLY_KSM = { controller: false, balloon: false, zswap: false, swap: false };
const BASE = 0x1000_0000n;

function imagePage(host: OvercommitHost, vm: number, index: number) {
  const v = host.vms[vm];
  const gva = BASE + BigInt(index) * 0x1000n;
  const gpa = v.gvaToGpa.get(gva) as bigint;
  return { gva, gpa, leaf: v.tdp.leafOf(gpa), hpa: host.frameOf(v, gpa) };
}

describe("KSM (docs/overcommit.md §KSM)", () => {
  it("identical-vms, 4 VMs x 10,000 pages, sharedFraction 0.5, zeroFraction 0 converges to pages_shared 5000 and pages_sharing 15000", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 4, pagesPerVm: 10_000, sharedFraction: 0.5, zeroFraction: 0, seconds: 20 },
      ONLY_KSM,
    );
    host.run();
    expect(host.ksm?.counters.pages_shared).toBe(5000);
    expect(host.ksm?.counters.pages_sharing).toBe(15000);
    // The unique halves sit in the unstable tree; general_profit = sharing*4K - rmap_items*64.
    expect(host.ksm?.counters.pages_unshared).toBe(20000);
    expect(host.ksm?.counters.general_profit).toBe(15000 * 4096 - 40000 * 64);
  });

  it("a full pass over P pages takes P / pages_to_scan x sleep_millisecs of simulated time", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 3, pagesPerVm: 400, seconds: 2 },
      {
        ...ONLY_KSM,
        ksm: { pagesToScan: 60, sleepMillisecs: 10 },
      },
    );
    host.run();
    expect(host.ksm?.counters.full_scans).toBeGreaterThan(2);
    expect(host.ksm?.counters.last_pass_seconds).toBeCloseTo((1200 / 60) * 0.01, 9);
  });

  it("a page enters the unstable tree only after its checksum held for a pass: the first pass merges nothing", () => {
    // Wake-ups 50 ms apart: boot is over before the first, so the first pass sees every page.
    const host = makeHost(
      "identical-vms",
      { vms: 2, pagesPerVm: 200, seconds: 0 },
      { ...ONLY_KSM, ksm: { sleepMillisecs: 50 } },
    );
    host.run();
    expect(host.ksm?.counters.pages_scanned).toBe(0);
    const idleUntilPasses = (passes: number) => {
      while ((host.ksm?.counters.full_scans ?? 0) < passes) host.idleUntil(host.now() + host.ms(1));
    };
    idleUntilPasses(1);
    expect(host.ksm?.counters.pages_sharing).toBe(0);
    expect(host.ksm?.counters.pages_volatile).toBe(400);
    idleUntilPasses(2);
    expect(host.ksm?.counters.pages_sharing).toBe(100);
  });

  it("a merge write-protects every sharer's EPT entry, points them at one host frame and frees the others", () => {
    const host = makeHost("identical-vms", { vms: 3, pagesPerVm: 100, seconds: 1 }, ONLY_KSM, {
      checkInvariants: true,
    });
    const usedBefore = () => host.frames.used;
    host.run();
    const pages = [0, 1, 2].map((vm) => imagePage(host, vm, 7));
    for (const page of pages) {
      expect(page.leaf).toBeDefined();
      expect((page.leaf?.entry ?? 0n) & 2n).toBe(0n);
      expect(page.hpa).toBe(pages[0].hpa);
    }
    expect(host.frames.contentOf(pages[0].hpa as bigint)).toEqual(imageContent(1, 7));
    // 50 image pages in 3 VMs share 50 frames: 100 frames freed (and scrubbed).
    expect(host.ksm?.counters.pages_sharing).toBe(100);
    expect(host.frames.scrubbed).toBeGreaterThanOrEqual(100);
    expect(usedBefore()).toBeGreaterThan(0);
    expect(host.invariantChecks).toBeGreaterThan(0);
  });

  it("a write to a merged page is an EPT violation, a copy and a remap (cow_ksm), charged to the writer, and leaves no stale translation", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 2, pagesPerVm: 100, sharedFraction: 0.5, seconds: 1 },
      ONLY_KSM,
      {
        checkInvariants: true,
      },
    );
    host.run();
    const before = imagePage(host, 1, 3);
    // The image region is a read-only file mapping in the guest; the hypervisor sees the write the
    // guest kernel makes on a copy-up, so make VM 1's mapping writable as a private file mapping would.
    const vm = host.vms[1];
    vm.os.protectRange(vm.process, before.gva, 0x1000n, { writable: true, user: true, executable: false });
    const exitsBefore = host.exitsBy.ksm;
    const cyclesBefore = host.machine.counter(1);
    host.runAccesses([[1, before.gva, true]]);
    const after = imagePage(host, 1, 3);
    expect(host.ksm?.counters.cow_ksm).toBe(1);
    expect(host.exitsBy.ksm).toBe(exitsBefore + 1);
    // The writer pays: the break is charged to VM 2, none to VM 1.
    expect(host.ksm?.cowByVm[1].breaks).toBe(1);
    expect(host.ksm?.cowByVm[1].cycles).toBe(host.ksm?.counters.cow_break_cycles);
    expect(host.ksm?.cowByVm[0].breaks).toBe(0);
    expect(after.hpa).not.toBe(before.hpa);
    expect((after.leaf?.entry ?? 0n) & 2n).toBe(2n);
    expect(host.ksm?.counters.cow_break_max_cycles).toBeGreaterThan(host.config.hypervisor.costs.exit);
    expect(host.machine.counter(1) - cyclesBefore).toBeGreaterThanOrEqual(
      host.ksm?.counters.cow_break_cycles ?? 0,
    );
    // VM 0 still reads the image page from the KSM frame.
    expect(host.contentOf(host.vms[0], imagePage(host, 0, 3).gpa)).toEqual(imageContent(1, 3));
    expect(checkInvariants(host, "test")).toBeGreaterThan(0);
  });

  it("isolation: a VM's write to a merged page is never visible to another VM (property)", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 3, pagesPerVm: 64, sharedFraction: 0.5, seconds: 1 },
      ONLY_KSM,
      {
        checkInvariants: true,
      },
    );
    host.run();
    for (const vm of host.vms)
      vm.os.protectRange(vm.process, BASE, 32n * 0x1000n, { writable: true, user: true, executable: false });
    const written = new Set<string>();
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 31 }), fc.boolean()), {
          minLength: 1,
          maxLength: 12,
        }),
        (steps) => {
          for (const [vm, page, idle] of steps) {
            host.runAccesses([[vm, BASE + BigInt(page) * 0x1000n, true]]);
            written.add(`${vm}:${page}`);
            // Give KSM time to merge again whatever became equal.
            if (idle) host.idleUntil(host.now() + host.ms(100));
          }
          for (let vm = 0; vm < 3; vm++) {
            for (let page = 0; page < 32; page++) {
              if (written.has(`${vm}:${page}`)) continue;
              const gpa = host.vms[vm].gvaToGpa.get(BASE + BigInt(page) * 0x1000n) as bigint;
              expect(host.contentOf(host.vms[vm], gpa)).toEqual(imageContent(1, page));
            }
          }
        },
      ),
      { numRuns: 15, seed: 7 },
    );
  });

  it("use_zero_pages merges zero pages with the host zero page (ksm_zero_pages), not the stable tree", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 2, pagesPerVm: 100, sharedFraction: 0, zeroFraction: 0.5, seconds: 1 },
      {
        ...ONLY_KSM,
        ksm: { useZeroPages: true },
      },
    );
    host.run();
    expect(host.ksm?.counters.ksm_zero_pages).toBe(100);
    expect(host.ksm?.counters.pages_shared).toBe(0);
  });

  it("with mergeAcrossVms off, identical VMs share nothing across VMs (the KSM timing channel is closed)", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 3, pagesPerVm: 100, seconds: 1 },
      { ...ONLY_KSM, ksm: { mergeAcrossVms: false } },
    );
    host.run();
    expect(host.ksm?.counters.pages_sharing).toBe(0);
  });

  it("max_page_sharing caps sharers per KSM page: further sharers start a duplicate in a chain", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 4, pagesPerVm: 40, sharedFraction: 0.5, seconds: 1 },
      { ...ONLY_KSM, ksm: { maxPageSharing: 2 } },
    );
    host.run();
    expect(host.ksm?.counters.pages_shared).toBe(40);
    expect(host.ksm?.counters.pages_sharing).toBe(40);
    expect(host.ksm?.counters.stable_node_chains).toBe(20);
    expect(host.ksm?.counters.stable_node_dups).toBe(40);
  });
});

describe("the KSM timing channel", () => {
  it("a write to a page merged across VMs takes a COW break the writer can time; with mergeAcrossVms off it does not", () => {
    const latency = (mergeAcrossVms: boolean) => {
      const host = makeHost(
        "identical-vms",
        { vms: 2, pagesPerVm: 100, sharedFraction: 0.5, seconds: 1 },
        {
          ...ONLY_KSM,
          ksm: { mergeAcrossVms },
        },
      );
      host.run();
      const vm = host.vms[0];
      const gva = BASE + 5n * 0x1000n;
      vm.os.protectRange(vm.process, gva, 0x1000n, { writable: true, user: true, executable: false });
      const before = host.machine.counter(1);
      host.runAccesses([[0, gva, true]]);
      return { cycles: host.machine.counter(1) - before, ksm: host.ksm?.counters };
    };
    const merged = latency(true);
    const separate = latency(false);
    expect(merged.ksm?.cow_ksm).toBe(1);
    expect(separate.ksm?.cow_ksm).toBe(0);
    const costs = { exit: 1200, tdpFault: 3000, copy: 1000 };
    expect(merged.cycles - separate.cycles).toBeGreaterThanOrEqual(costs.exit + costs.tdpFault + costs.copy);
    // What the writer lost is reported, whole.
    expect(merged.ksm?.cow_break_cycles).toBeGreaterThanOrEqual(costs.exit + costs.tdpFault + costs.copy);
    expect(merged.ksm?.cow_break_cycles).toBeLessThanOrEqual(merged.cycles);
  });
});
