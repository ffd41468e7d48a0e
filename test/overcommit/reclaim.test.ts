// The balloon, zswap, swap, the controller and the invariant checker on the overcommitted host
// (docs/overcommit.md).
import { describe, expect, it } from "vitest";
import { ZERO_CONTENT } from "../../src/overcommit/content.js";
import { Controller } from "../../src/overcommit/controller.js";
import { checkInvariants } from "../../src/overcommit/invariants.js";
import { makeHost } from "./helpers.js";

const NONE = { controller: false, ksm: false, balloon: false, zswap: false, swap: false };

describe("virtio-balloon (docs/overcommit.md §virtio-balloon)", () => {
  it("inflating 600 pages takes three messages of at most 256 PFNs, each a VM exit, unmaps them from EPT, shoots down and frees the frames", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 2, pagesPerVm: 1024, sharedFraction: 0.75, seconds: 0 },
      { ...NONE, balloon: {} },
      {
        checkInvariants: true,
      },
    );
    host.run();
    const vm = host.vms[0];
    const used = host.frames.used;
    // The driver takes free guest pages first, then the guest drops page-cache pages for it.
    const actual = host.balloon?.setTarget(vm, 600) ?? 0;
    const c = host.balloon?.counters;
    expect(actual).toBe(600);
    expect(vm.stats.pageCacheDropped).toBeGreaterThan(0);
    expect(c?.inflate_messages).toBe(3);
    expect(host.exitsBy.balloon).toBe(c?.inflate_messages);
    expect(host.invalidationsBy.balloon).toBe(c?.inflate_messages);
    for (const gpa of (host.balloon as unknown as { state: { pages: bigint[] }[] }).state[0].pages) {
      expect(vm.tdp.leafOf(gpa)).toBeUndefined();
      expect(host.frameOf(vm, gpa)).toBeUndefined();
    }
    expect(host.frames.used).toBe(used - (c?.frames_freed ?? 0));
    // Deflating gives the PFNs back to the guest, one message per 256.
    host.balloon?.setTarget(vm, 0);
    expect(host.balloon?.actual(vm)).toBe(0);
    expect(c?.deflate_messages).toBe(Math.ceil(actual / 256));
  });

  it("a frame freed by the balloon is zeroed before it backs another VM (scrubbing)", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 2, pagesPerVm: 256, sharedFraction: 0, seconds: 0 },
      { ...NONE, balloon: {} },
    );
    host.run();
    const vm = host.vms[0];
    // VM 1's application gives all its memory up (the guest reclaims nothing: inflate takes free and used pages).
    const victim = [...vm.gvaToGpa.values()][10];
    const hpa = host.frameOf(vm, victim) as bigint;
    expect(host.frames.contentOf(hpa)).not.toEqual(ZERO_CONTENT);
    host.machine.writePhys64(hpa, 0x1234n);
    // Unmap it in the guest so the balloon can take it, then inflate.
    vm.os.unmapRange(vm.process, vm.gpaToGva.get(victim) as bigint, 0x1000n);
    vm.gpaToGva.delete(victim);
    host.balloon?.setTarget(vm, vm.freePages);
    expect(host.frameOf(vm, victim)).toBeUndefined();
    // The next host allocation reuses the freed frame: it holds zeros, in content and in bytes.
    const reused = host.frames.alloc("4K");
    expect(host.frames.contentOf(reused)).toEqual(ZERO_CONTENT);
    expect(host.machine.readPhys64(reused)).toBe(0n);
  });

  it("inside the guest the page cache shrinks first; without swap or DEFLATE_ON_OOM the guest OOM-kills; with it, OOM deflates 256 pages", () => {
    for (const deflateOnOom of [false, true]) {
      const host = makeHost(
        "identical-vms",
        { vms: 1, pagesPerVm: 1024, sharedFraction: 0.5, seconds: 0 },
        {
          ...NONE,
          balloon: { deflateOnOom },
        },
      );
      host.run();
      const vm = host.vms[0];
      host.balloon?.setTarget(vm, vm.memoryPages);
      expect(vm.stats.pageCacheDropped).toBe(512);
      expect(vm.alive).toBe(true);
      // The application touches a dropped page-cache page again: no free memory.
      host.guestPageFault(vm, 0x1000_0000n, 0n);
      if (deflateOnOom) {
        expect(vm.stats.oomDeflations).toBe(1);
        expect(host.balloon?.counters.pages_deflated).toBe(256);
        expect(vm.alive).toBe(true);
      } else {
        expect(vm.stats.oomKills).toBe(1);
        expect(vm.alive).toBe(false);
      }
    }
  });

  it("the stats queue reports tags 0-9 each polling interval, one exit per VM", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 2, pagesPerVm: 128, seconds: 1 },
      { ...NONE, balloon: { statsIntervalMs: 250 } },
    );
    host.run();
    expect(host.balloon?.counters.stats_requests).toBe(8);
    const stats = host.balloon?.guestStats(host.vms[0]);
    expect(Object.keys(stats ?? {})).toHaveLength(10);
    expect(stats?.total_memory).toBe(host.vms[0].memoryPages * 4096);
    expect(stats?.major_faults).toBe(64);
  });
});

describe("zswap and swap (docs/overcommit.md §zswap)", () => {
  it("cold pages (EPT accessed flag still clear) are compressed; same-filled pages store only their value; pages over 2990 B are rejected to swap", () => {
    const host = makeHost(
      "cloud-mix",
      { vms: 4, pagesPerVm: 256, records: 0, seconds: 0 },
      { ...NONE, zswap: {}, swap: {} },
      {
        checkInvariants: true,
      },
    );
    host.run();
    const usedBefore = host.frames.used;
    const freed = host.zswap?.reclaim(600, false) ?? 0;
    const z = host.zswap?.counters;
    expect(freed).toBeGreaterThan(0);
    expect(z?.stored_pages).toBeGreaterThan(0);
    expect(z?.same_filled_pages).toBeGreaterThan(0);
    expect(z?.reject_compress_poor).toBeGreaterThan(0);
    expect(host.swap?.counters.pswpout).toBe(z?.reject_compress_poor);
    expect(host.frames.used).toBe(usedBefore - freed);
    expect(host.invalidationsBy.zswap + host.invalidationsBy.swap).toBe(freed);
  });

  it("an access to a compressed page is an EPT violation, a decompression at the compressor's cost, and a remap", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 1, pagesPerVm: 64, sharedFraction: 0, seconds: 0 },
      { ...NONE, zswap: { compressor: "zstd" }, swap: {} },
      {
        checkInvariants: true,
      },
    );
    host.run();
    host.zswap?.reclaim(64, false);
    const loads = host.zswap?.counters.loads ?? 0;
    const vm = host.vms[0];
    const gva = [...vm.gvaToGpa.keys()].find((g) =>
      host.zswap?.holds(host.key(vm, vm.gvaToGpa.get(g) as bigint)),
    ) as bigint;
    const content = host.contentOf(vm, vm.gvaToGpa.get(gva) as bigint);
    host.runAccesses([[0, gva, false]]);
    expect(host.zswap?.counters.loads).toBe(loads + 1);
    expect(host.exitsBy.zswap).toBe(1);
    expect(host.zswap?.counters.decompress_cycles).toBe(host.us(4));
    expect(host.frames.contentOf(host.frameOf(vm, vm.gvaToGpa.get(gva) as bigint) as bigint)).toEqual(
      content,
    );
  });

  it("a full pool writes its oldest pages back to swap (pool_limit_hit, written_back_pages)", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 1, pagesPerVm: 2048, sharedFraction: 0, seconds: 0 },
      { ...NONE, zswap: { maxPoolPercent: 1 }, swap: {} },
      {
        hostMemory: "16M",
      },
    );
    host.run();
    host.zswap?.reclaim(1500, false);
    expect(host.zswap?.counters.pool_limit_hit).toBeGreaterThan(0);
    expect(host.zswap?.counters.written_back_pages).toBeGreaterThan(0);
    expect(host.zswap?.counters.pool_total_size).toBeLessThanOrEqual(host.zswap?.maxPoolBytes ?? 0);
  });

  it("swap-in happens on an EPT violation and reads the page's cluster (page-cluster 3: 8 pages)", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 1, pagesPerVm: 64, sharedFraction: 0, seconds: 0 },
      { ...NONE, swap: { device: "hdd" } },
      {
        checkInvariants: true,
      },
    );
    host.run();
    host.swap?.reclaim(64, false);
    const gva = 0x1000_0000n + 8n * 0x1000n;
    const before = host.machine.counter(1);
    host.runAccesses([[0, gva, false]]);
    expect(host.swap?.counters.pswpin).toBeGreaterThanOrEqual(2);
    expect(host.swap?.counters.readahead_pages).toBe((host.swap?.counters.pswpin ?? 0) - 1);
    expect(host.machine.counter(1) - before).toBeGreaterThan(host.us(8000));
    expect(host.exitsBy.swap).toBe(1);
  });

  it("double paging: the guest swapping out a page the host already swapped is detected and counted", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 1, pagesPerVm: 128, sharedFraction: 0, seconds: 0 },
      {
        ...NONE,
        swap: {},
        balloon: { guestSwapPages: 1000 },
      },
    );
    host.run();
    host.swap?.reclaim(128, false);
    const vm = host.vms[0];
    host.balloon?.setTarget(vm, vm.memoryPages);
    expect(vm.stats.swapOut).toBeGreaterThan(0);
    expect(host.swap?.counters.double_paging).toBeGreaterThan(0);
  });
});

describe("the overcommit controller", () => {
  const t = { clear: 100, soft: 64, hard: 32, low: 16 };
  it("vSphere states follow the thresholds in percent of minFree: high >= 100, clear >= 64, soft >= 32, hard >= 16, low below", () => {
    expect(Controller.vsphereState(150, "high", t, 10)).toBe("high");
    expect(Controller.vsphereState(99, "high", t, 10)).toBe("clear");
    expect(Controller.vsphereState(63, "high", t, 10)).toBe("soft");
    expect(Controller.vsphereState(31, "high", t, 10)).toBe("hard");
    expect(Controller.vsphereState(15, "high", t, 10)).toBe("low");
  });

  it("a state is left upward only with free memory hysteresisPercent above the threshold", () => {
    expect(Controller.vsphereState(105, "clear", t, 10)).toBe("clear");
    expect(Controller.vsphereState(111, "clear", t, 10)).toBe("high");
    expect(Controller.vsphereState(68, "soft", t, 10)).toBe("soft");
    expect(Controller.vsphereState(71, "soft", t, 10)).toBe("clear");
  });

  it("memory-hog under the vSphere policy changes state as the thresholds say, runs KSM, and leaves no stale translation", () => {
    const host = makeHost(
      "memory-hog",
      { pagesPerVm: 1024, records: 60_000, seconds: 3 },
      { controller: { intervalMs: 10 } },
      {
        hostMemory: "24M",
        checkInvariants: true,
      },
    );
    host.run();
    const c = host.controller;
    expect(c?.transitions.length).toBeGreaterThan(0);
    expect(c?.transitions.some((x) => x.to !== "high")).toBe(true);
    // Every state change follows the thresholds: down when free memory is below the new state's
    // threshold, up only when it is 10 % above the old state's.
    const boundary: Record<string, number> = { clear: 100, soft: 64, hard: 32, low: 16 };
    const order = ["high", "clear", "soft", "hard", "low"];
    for (const x of c?.transitions ?? []) {
      if (order.indexOf(x.to) > order.indexOf(x.from)) expect(x.freeRatio).toBeLessThan(boundary[x.to]);
      else expect(x.freeRatio).toBeGreaterThanOrEqual(boundary[x.from] * 1.1 - 1e-3);
    }
    expect(Object.values(c?.secondsIn ?? {}).reduce((a, b) => a + b, 0)).toBeCloseTo(host.seconds(), 6);
    expect((host.ksm?.counters.pages_scanned ?? 0) > 0).toBe(true);
    expect(host.invariantChecks).toBeGreaterThan(10);
  });

  it("the MoM policy enters pressure below 20 % free and runs KSM with pages_to_scan within 64-1250", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 2, pagesPerVm: 2048, seconds: 1 },
      { controller: { policy: "mom" } },
      { hostMemory: "20M" },
    );
    host.run();
    // Under pressure KSM ran with pages_to_scan raised by 300 a step (from 100: 400, 700, 1000, 1250 at most).
    expect(host.controller?.transitions.some((x) => x.to === "pressure")).toBe(true);
    expect(host.ksm?.counters.pages_scanned).toBeGreaterThan(400);
    expect(host.ksm?.pagesToScan).toBeLessThanOrEqual(1250);
    expect((host.ksm?.pagesToScan ?? 0) - 100).toBeGreaterThanOrEqual(-36);
  });
});

describe("the MoM policy, step by step", () => {
  it("under pressure (free below 20 %) each step raises pages_to_scan by 300 up to 1250; with memory free it lowers it by 50 down to 64 and stops KSM", () => {
    const momOnly = {
      controller: { policy: "mom" },
      balloon: false,
      zswap: false,
      swap: false,
      admissionRatio: 0,
    };
    const tight = makeHost("identical-vms", { vms: 2, pagesPerVm: 2048, seconds: 0 }, momOnly, {
      hostMemory: "20M",
    });
    tight.run();
    if (tight.ksm) tight.ksm.pagesToScan = 100;
    const scans: number[] = [];
    for (let i = 0; i < 5; i++) {
      tight.controller?.step();
      scans.push(tight.ksm?.pagesToScan ?? 0);
    }
    expect(tight.controller?.state).toBe("pressure");
    expect(scans).toEqual([400, 700, 1000, 1250, 1250]);
    expect(tight.ksm?.running).toBe(true);
    const roomy = makeHost("identical-vms", { vms: 2, pagesPerVm: 256, seconds: 0 }, momOnly, {
      hostMemory: "64M",
    });
    roomy.run();
    if (roomy.ksm) {
      roomy.ksm.pagesToScan = 200;
      roomy.ksm.running = true;
    }
    const down: number[] = [];
    for (let i = 0; i < 4; i++) {
      roomy.controller?.step();
      down.push(roomy.ksm?.pagesToScan ?? 0);
    }
    expect(roomy.controller?.state).toBe("normal");
    expect(down).toEqual([150, 100, 64, 64]);
    expect(roomy.ksm?.running).toBe(false);
  });
});

describe("no stale translation (the invariant checker)", () => {
  it("flags an EPT entry changed without the shootdown", () => {
    const host = makeHost("identical-vms", { vms: 1, pagesPerVm: 32, sharedFraction: 0, seconds: 0 }, NONE);
    host.run();
    const vm = host.vms[0];
    const gva = 0x1000_0000n;
    host.runAccesses([[0, gva, false]]);
    expect(() => checkInvariants(host, "clean")).not.toThrow();
    const gpa = vm.gvaToGpa.get(gva) as bigint;
    vm.tdp.unmapPage(gpa);
    vm.vm.dropBacking(gpa);
    expect(() => checkInvariants(host, "unmap without flush")).toThrow(/no longer maps|EPT to nothing/);
    host.flush(vm, "balloon");
    expect(() => checkInvariants(host, "after flush")).not.toThrow();
  });
});

describe("free page reporting (docs/overcommit.md §Free page reporting)", () => {
  it("2 s after the guest frees memory, whole free 2 MiB blocks (order 9) are reported, 32 per request, and their frames freed", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 1, pagesPerVm: 4096, sharedFraction: 0.5, seconds: 0 },
      { ...NONE, balloon: { freePageReporting: true, statsIntervalMs: 0 } },
      { checkInvariants: true },
    );
    host.run();
    const vm = host.vms[0];
    // The guest drops its whole page cache (2048 pages = 4 blocks, if aligned).
    const used = host.frames.used;
    host.guestReclaim(vm, 2048, false);
    const freedAt = host.now();
    host.idleUntil(freedAt + host.ms(1999));
    expect(host.balloon?.counters.reporting_requests).toBe(0);
    host.idleUntil(freedAt + host.ms(2001));
    const c = host.balloon?.counters;
    expect(c?.reporting_requests).toBe(Math.ceil((c?.reported_blocks ?? 0) / 32));
    expect(c?.reported_blocks).toBeGreaterThanOrEqual(3);
    expect(c?.reported_frames_freed).toBe((c?.reported_blocks ?? 0) * 512);
    expect(host.frames.used).toBe(used - (c?.reported_frames_freed ?? 0));
  });
});

describe("the guest under balloon pressure", () => {
  it("with swap space the guest swaps anonymous pages out for the balloon, and a later touch is a major fault that swaps in (tags 0-2)", () => {
    const host = makeHost(
      "identical-vms",
      { vms: 1, pagesPerVm: 256, sharedFraction: 0, seconds: 0 },
      { ...NONE, balloon: { guestSwapPages: 128, statsIntervalMs: 100 } },
      { checkInvariants: true },
    );
    host.run();
    const vm = host.vms[0];
    const content = host.contentOf(vm, vm.gvaToGpa.get(0x1000_0000n) as bigint);
    host.balloon?.setTarget(vm, vm.freePages + 64);
    expect(vm.stats.swapOut).toBe(64);
    expect(vm.alive).toBe(true);
    // The first application page went to the guest's swap; touching it swaps it back in.
    expect(vm.guestSwap.has(0x1000_0000n)).toBe(true);
    host.balloon?.setTarget(vm, 0);
    host.runAccesses([[0, 0x1000_0000n, false]]);
    expect(vm.stats.swapIn).toBe(1);
    expect(host.contentOf(vm, vm.gvaToGpa.get(0x1000_0000n) as bigint)).toEqual(content);
    host.idleUntil(host.now() + host.ms(100));
    const stats = host.balloon?.guestStats(vm);
    expect(stats?.swap_out).toBe(64);
    expect(stats?.swap_in).toBe(1);
    expect(stats?.major_faults).toBe(1);
  });
});
