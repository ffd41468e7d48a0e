// The "overcommit" config section: one sub-section per mechanism, each switchable off, with the
// defaults of Linux/KVM/QEMU/vSphere/MoM where they have one (docs/overcommit.md). Validation names the
// key, as the rest of the config does.
import { fail, flag, type Json, number, object, oneOf, onlyKeys, section } from "../config/validate.js";

/** A choice among `options`, or `fallback` when absent. */
function choice<T extends string>(value: Json | undefined, key: string, fallback: T, options: T[]): T {
  return value === undefined ? fallback : oneOf(value, key, options);
}

export type Compressor = "lz4" | "lzo" | "zstd";
export type SwapDevice = "nvme" | "ssd" | "hdd";
export type ControllerPolicy = "vsphere" | "mom";

export interface KsmConfig {
  enabled: boolean;
  /** Pages scanned per wake-up (ksm/pages_to_scan). */
  pagesToScan: number;
  /** Sleep between wake-ups in simulated milliseconds (ksm/sleep_millisecs). */
  sleepMillisecs: number;
  /** Sharers per KSM page before a new duplicate is started (ksm/max_page_sharing). */
  maxPageSharing: number;
  /** Merge zero pages with the host's zero page instead of the stable tree (ksm/use_zero_pages). */
  useZeroPages: boolean;
  /** Merge pages of different VMs; off, each VM has its own trees (closes the cross-VM timing channel). */
  mergeAcrossVms: boolean;
  /** CPU cycles ksmd spends per page scanned (checksum, tree search). */
  scanCyclesPerPage: number;
  /** Cycles to copy a 4 KiB page on a COW break. */
  copyCycles: number;
}

export interface BalloonConfig {
  enabled: boolean;
  /** VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest's OOM notifier deflates 256 pages instead of killing. */
  deflateOnOom: boolean;
  /** Free page reporting (VIRTIO_BALLOON_F_REPORTING). */
  freePageReporting: boolean;
  /** Stats-queue polling interval (QEMU's guest-stats-polling-interval), simulated ms; 0 = off. */
  statsIntervalMs: number;
  /** Guest swap space per VM in 4 KiB pages (0: the guest OOM-kills instead of swapping). */
  guestSwapPages: number;
  /** The guest's virtual-disk access for a page (page-cache refault, guest swap), in microseconds. */
  guestDiskUs: number;
  /** Host work per PFN of an inflate message (discarding the range), in cycles. */
  pfnCycles: number;
}

export interface ZswapConfig {
  enabled: boolean;
  compressor: Compressor;
  /** Microseconds to compress / decompress a 4 KiB page, per compressor. */
  compressUs: Record<Compressor, number>;
  decompressUs: Record<Compressor, number>;
  maxPoolPercent: number;
  acceptThresholdPercent: number;
  /** Pages compressing to more than this are rejected (Google's far-memory limit). */
  maxCompressedBytes: number;
}

export interface SwapConfig {
  enabled: boolean;
  device: SwapDevice;
  /** Per-request latency and bandwidth; default from the device preset. */
  latencyUs: number;
  bandwidthMBps: number;
  /** log2 of the readahead cluster (vm.page-cluster). */
  pageCluster: number;
  /** Swap space in 4 KiB pages. */
  sizePages: number;
}

export interface ControllerConfig {
  enabled: boolean;
  policy: ControllerPolicy;
  /** Simulated milliseconds between controller decisions. */
  intervalMs: number;
  /** vSphere's minFree as a share of host memory. */
  minFreePercent: number;
  /** vSphere 6 state thresholds, in percent of minFree. */
  thresholds: { high: number; clear: number; soft: number; hard: number; low: number };
  /** Free memory must pass a threshold by this share of it before the state goes back up. */
  hysteresisPercent: number;
  /** Pages one controller step asks a mechanism to reclaim at most. */
  reclaimPagesPerStep: number;
  /** oVirt MoM thresholds (free memory in percent of host memory) and steps. */
  mom: { pressurePercent: number; criticalPercent: number; balloonStepPercent: number };
}

export interface OvercommitConfig {
  /** CPU frequency that converts microseconds into cycles. */
  cpuMHz: number;
  /** Cycles of one remote TLB shootdown per vCPU (IPI + INVEPT), on top of the misses it causes. */
  shootdownCycles: number;
  /** Check "no stale translation" and the frame accounting after every mechanism step. */
  checkInvariants: boolean;
  /** Simulated milliseconds between timeline samples. */
  timelineIntervalMs: number;
  /** Admission control: total VM memory may be at most this multiple of host memory; 0 = off. */
  admissionRatio: number;
  ksm: KsmConfig;
  balloon: BalloonConfig;
  zswap: ZswapConfig;
  swap: SwapConfig;
  controller: ControllerConfig;
}

/**
 * Swap device presets: per-request latency and sequential bandwidth (vendor-typical 4 KiB random-read
 * figures, not re-checked against a datasheet; override with swap.latencyUs/bandwidthMBps).
 */
export const SWAP_PRESETS: Record<SwapDevice, { latencyUs: number; bandwidthMBps: number }> = {
  nvme: { latencyUs: 80, bandwidthMBps: 2000 },
  ssd: { latencyUs: 150, bandwidthMBps: 500 },
  hdd: { latencyUs: 8000, bandwidthMBps: 150 },
};

export function defaultOvercommit(): OvercommitConfig {
  return {
    cpuMHz: 2000,
    shootdownCycles: 2000,
    checkInvariants: false,
    timelineIntervalMs: 100,
    admissionRatio: 1.5,
    ksm: {
      enabled: true,
      pagesToScan: 100,
      sleepMillisecs: 20,
      maxPageSharing: 256,
      useZeroPages: false,
      mergeAcrossVms: true,
      scanCyclesPerPage: 2000,
      copyCycles: 1000,
    },
    balloon: {
      enabled: true,
      deflateOnOom: false,
      freePageReporting: false,
      statsIntervalMs: 1000,
      guestSwapPages: 0,
      guestDiskUs: 100,
      pfnCycles: 200,
    },
    zswap: {
      enabled: true,
      compressor: "lzo",
      // Per 4 KiB page; lzo's decompression plus the fault is Google's ~6 us access
      // (docs/overcommit.md §Published savings).
      compressUs: { lz4: 3, lzo: 5, zstd: 10 },
      decompressUs: { lz4: 1, lzo: 2, zstd: 4 },
      maxPoolPercent: 20,
      acceptThresholdPercent: 90,
      maxCompressedBytes: 2990,
    },
    swap: { enabled: true, device: "nvme", ...SWAP_PRESETS.nvme, pageCluster: 3, sizePages: 1 << 20 },
    controller: {
      enabled: true,
      policy: "vsphere",
      intervalMs: 100,
      minFreePercent: 6,
      thresholds: { high: 400, clear: 100, soft: 64, hard: 32, low: 16 },
      hysteresisPercent: 10,
      reclaimPagesPerStep: 2048,
      mom: { pressurePercent: 20, criticalPercent: 5, balloonStepPercent: 5 },
    },
  };
}

export function resolveOvercommit(input: Json): OvercommitConfig {
  const result = defaultOvercommit();
  if (input === true) return result;
  const o = object(input, "overcommit");
  onlyKeys(o, "overcommit", [
    "cpuMHz",
    "shootdownCycles",
    "checkInvariants",
    "timelineIntervalMs",
    "admissionRatio",
    "ksm",
    "balloon",
    "zswap",
    "swap",
    "controller",
  ]);
  result.cpuMHz = number(o.cpuMHz, "overcommit.cpuMHz", result.cpuMHz, 100, 10000);
  result.shootdownCycles = number(
    o.shootdownCycles,
    "overcommit.shootdownCycles",
    result.shootdownCycles,
    0,
    1e7,
    true,
  );
  result.checkInvariants = flag(o.checkInvariants, "overcommit.checkInvariants", false);
  result.timelineIntervalMs = number(o.timelineIntervalMs, "overcommit.timelineIntervalMs", 100, 1, 1e7);
  result.admissionRatio = number(
    o.admissionRatio,
    "overcommit.admissionRatio",
    result.admissionRatio,
    0,
    100,
  );

  const ksm = section(o.ksm, "overcommit.ksm");
  if (ksm === false) result.ksm.enabled = false;
  else if (ksm) {
    const k = "overcommit.ksm";
    onlyKeys(ksm, k, [
      "enabled",
      "pagesToScan",
      "sleepMillisecs",
      "maxPageSharing",
      "useZeroPages",
      "mergeAcrossVms",
      "scanCyclesPerPage",
      "copyCycles",
    ]);
    const d = result.ksm;
    d.enabled = flag(ksm.enabled, `${k}.enabled`, true);
    d.pagesToScan = number(ksm.pagesToScan, `${k}.pagesToScan`, d.pagesToScan, 1, 1e7, true);
    d.sleepMillisecs = number(ksm.sleepMillisecs, `${k}.sleepMillisecs`, d.sleepMillisecs, 1, 1e6, true);
    d.maxPageSharing = number(ksm.maxPageSharing, `${k}.maxPageSharing`, d.maxPageSharing, 2, 1e6, true);
    d.useZeroPages = flag(ksm.useZeroPages, `${k}.useZeroPages`, d.useZeroPages);
    d.mergeAcrossVms = flag(ksm.mergeAcrossVms, `${k}.mergeAcrossVms`, d.mergeAcrossVms);
    d.scanCyclesPerPage = number(
      ksm.scanCyclesPerPage,
      `${k}.scanCyclesPerPage`,
      d.scanCyclesPerPage,
      0,
      1e9,
      true,
    );
    d.copyCycles = number(ksm.copyCycles, `${k}.copyCycles`, d.copyCycles, 0, 1e9, true);
  }

  const balloon = section(o.balloon, "overcommit.balloon");
  if (balloon === false) result.balloon.enabled = false;
  else if (balloon) {
    const k = "overcommit.balloon";
    onlyKeys(balloon, k, [
      "enabled",
      "deflateOnOom",
      "freePageReporting",
      "statsIntervalMs",
      "guestSwapPages",
      "guestDiskUs",
      "pfnCycles",
    ]);
    const d = result.balloon;
    d.enabled = flag(balloon.enabled, `${k}.enabled`, true);
    d.deflateOnOom = flag(balloon.deflateOnOom, `${k}.deflateOnOom`, d.deflateOnOom);
    d.freePageReporting = flag(balloon.freePageReporting, `${k}.freePageReporting`, d.freePageReporting);
    d.statsIntervalMs = number(balloon.statsIntervalMs, `${k}.statsIntervalMs`, d.statsIntervalMs, 0, 1e7);
    d.guestSwapPages = number(
      balloon.guestSwapPages,
      `${k}.guestSwapPages`,
      d.guestSwapPages,
      0,
      1 << 28,
      true,
    );
    d.guestDiskUs = number(balloon.guestDiskUs, `${k}.guestDiskUs`, d.guestDiskUs, 0, 1e7);
    d.pfnCycles = number(balloon.pfnCycles, `${k}.pfnCycles`, d.pfnCycles, 0, 1e9, true);
  }

  const zswap = section(o.zswap, "overcommit.zswap");
  if (zswap === false) result.zswap.enabled = false;
  else if (zswap) {
    const k = "overcommit.zswap";
    onlyKeys(zswap, k, [
      "enabled",
      "compressor",
      "compressUs",
      "decompressUs",
      "maxPoolPercent",
      "acceptThresholdPercent",
      "maxCompressedBytes",
    ]);
    const d = result.zswap;
    d.enabled = flag(zswap.enabled, `${k}.enabled`, true);
    d.compressor = choice(zswap.compressor, `${k}.compressor`, d.compressor, ["lz4", "lzo", "zstd"]);
    for (const table of ["compressUs", "decompressUs"] as const) {
      if (zswap[table] === undefined) continue;
      const t = object(zswap[table], `${k}.${table}`);
      onlyKeys(t, `${k}.${table}`, ["lz4", "lzo", "zstd"]);
      for (const c of ["lz4", "lzo", "zstd"] as const)
        d[table][c] = number(t[c], `${k}.${table}.${c}`, d[table][c], 0, 1e6);
    }
    d.maxPoolPercent = number(zswap.maxPoolPercent, `${k}.maxPoolPercent`, d.maxPoolPercent, 0, 100, true);
    d.acceptThresholdPercent = number(
      zswap.acceptThresholdPercent,
      `${k}.acceptThresholdPercent`,
      d.acceptThresholdPercent,
      0,
      100,
      true,
    );
    d.maxCompressedBytes = number(
      zswap.maxCompressedBytes,
      `${k}.maxCompressedBytes`,
      d.maxCompressedBytes,
      8,
      4096,
      true,
    );
  }

  const swap = section(o.swap, "overcommit.swap");
  if (swap === false) result.swap.enabled = false;
  else if (swap) {
    const k = "overcommit.swap";
    onlyKeys(swap, k, ["enabled", "device", "latencyUs", "bandwidthMBps", "pageCluster", "sizePages"]);
    const d = result.swap;
    d.enabled = flag(swap.enabled, `${k}.enabled`, true);
    d.device = choice(swap.device, `${k}.device`, d.device, ["nvme", "ssd", "hdd"]);
    const preset = SWAP_PRESETS[d.device];
    d.latencyUs = number(swap.latencyUs, `${k}.latencyUs`, preset.latencyUs, 0, 1e7);
    d.bandwidthMBps = number(swap.bandwidthMBps, `${k}.bandwidthMBps`, preset.bandwidthMBps, 1, 1e6);
    d.pageCluster = number(swap.pageCluster, `${k}.pageCluster`, d.pageCluster, 0, 10, true);
    d.sizePages = number(swap.sizePages, `${k}.sizePages`, d.sizePages, 1, 1 << 30, true);
  }

  const controller = section(o.controller, "overcommit.controller");
  if (controller === false) result.controller.enabled = false;
  else if (controller) {
    const k = "overcommit.controller";
    onlyKeys(controller, k, [
      "enabled",
      "policy",
      "intervalMs",
      "minFreePercent",
      "thresholds",
      "hysteresisPercent",
      "reclaimPagesPerStep",
      "mom",
    ]);
    const d = result.controller;
    d.enabled = flag(controller.enabled, `${k}.enabled`, true);
    d.policy = choice(controller.policy, `${k}.policy`, d.policy, ["vsphere", "mom"]);
    d.intervalMs = number(controller.intervalMs, `${k}.intervalMs`, d.intervalMs, 1, 1e7);
    d.minFreePercent = number(controller.minFreePercent, `${k}.minFreePercent`, d.minFreePercent, 0.01, 25);
    d.hysteresisPercent = number(
      controller.hysteresisPercent,
      `${k}.hysteresisPercent`,
      d.hysteresisPercent,
      0,
      100,
    );
    d.reclaimPagesPerStep = number(
      controller.reclaimPagesPerStep,
      `${k}.reclaimPagesPerStep`,
      d.reclaimPagesPerStep,
      1,
      1 << 24,
      true,
    );
    if (controller.thresholds !== undefined) {
      const t = object(controller.thresholds, `${k}.thresholds`);
      onlyKeys(t, `${k}.thresholds`, ["high", "clear", "soft", "hard", "low"]);
      for (const name of ["high", "clear", "soft", "hard", "low"] as const)
        d.thresholds[name] = number(t[name], `${k}.thresholds.${name}`, d.thresholds[name], 0, 10000);
      const order = [
        d.thresholds.high,
        d.thresholds.clear,
        d.thresholds.soft,
        d.thresholds.hard,
        d.thresholds.low,
      ];
      for (let i = 1; i < order.length; i++)
        if (order[i] >= order[i - 1])
          fail(`${k}.thresholds`, "must decrease from high to clear, soft, hard, low");
    }
    if (controller.mom !== undefined) {
      const m = object(controller.mom, `${k}.mom`);
      onlyKeys(m, `${k}.mom`, ["pressurePercent", "criticalPercent", "balloonStepPercent"]);
      d.mom.pressurePercent = number(
        m.pressurePercent,
        `${k}.mom.pressurePercent`,
        d.mom.pressurePercent,
        0,
        100,
      );
      d.mom.criticalPercent = number(
        m.criticalPercent,
        `${k}.mom.criticalPercent`,
        d.mom.criticalPercent,
        0,
        100,
      );
      d.mom.balloonStepPercent = number(
        m.balloonStepPercent,
        `${k}.mom.balloonStepPercent`,
        d.mom.balloonStepPercent,
        0.1,
        100,
      );
      if (d.mom.criticalPercent >= d.mom.pressurePercent)
        fail(`${k}.mom.criticalPercent`, "must be below mom.pressurePercent");
    }
  }
  return result;
}
