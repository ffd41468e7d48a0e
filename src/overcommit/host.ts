// An overcommitted host: several VMs on one machine and one host memory, each VM with its own EPT/NPT
// (TDP MMU), VPID and guest kernel, pinned one vCPU to one physical CPU so each has its own TLBs and
// caches. Host memory has a capacity; the overcommit mechanisms (KSM, the balloon, zswap, swap and the
// controller that drives them) run on the simulated clock from budget exits, change EPT entries, and
// invalidate every vCPU's stale translations as KVM does, paying for it in exits and cycles. With
// host.pageSize "2M" regions are backed THP-like by 2M pages, and broken into 4K mappings by the
// controller or by a mechanism that needs one of their pages.
import type { ResolvedConfig } from "../config/config.js";
import * as L from "../core/layout.js";
import { type ExitRecord, Machine, MemvirtError } from "../core/machine.js";
import { CR0_PG, CR0_WP, CR4_PCIDE, CR4_PGE, EFER_LMA, EFER_NXE, type PageSize } from "../core/types.js";
import type { BuildName } from "../core/wasm.js";
import { FrameAllocator } from "../guest/frames.js";
import { ADDRESS_MASK, GuestOS, type Process } from "../guest/os.js";
import type { PagingCpu } from "../guest/paging-cpu.js";
import { TdpMmu } from "../hypervisor/tdp.js";
import { CYCLES_TDP, CYCLES_VM_EXIT, type ExitAction } from "../hypervisor/technique.js";
import { HostMemory, Vm } from "../hypervisor/vm.js";
import { Balloon } from "./balloon.js";
import type { OvercommitConfig } from "./config.js";
import { type PageContent, ZERO_CONTENT } from "./content.js";
import { Controller } from "./controller.js";
import { checkInvariants } from "./invariants.js";
import { Ksm } from "./ksm.js";
import { HostFrames } from "./memory.js";
import { HostSwap, Zswap } from "./zswap.js";

/** Handler-cycle categories beyond technique.ts's: host reclaim work, and waits for the swap device. */
export const CYCLES_OVERCOMMIT = 6;
export const CYCLES_DEVICE_WAIT = 7;

/** `split`: breaking 2M mappings into 4K ones (the controller's action, or for a mechanism needing a 4K page). */
export type Mechanism = "ksm" | "balloon" | "zswap" | "swap" | "guest" | "split";
export const MECHANISMS: readonly Mechanism[] = ["ksm", "balloon", "zswap", "swap", "guest", "split"];
/** What a 2M mapping was split for. */
export type SplitCause = "controller" | "ksm" | "balloon" | "zswap" | "swap";

const CR0_PE = 1n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const PAGE = 0x1000n;

/** A region of a VM's address space and what its pages hold. */
export interface GuestRegion {
  start: bigint;
  pages: number;
  /** File pages (the OS image) sit in the guest's page cache: clean, droppable, re-read from disk. */
  file: boolean;
}

/** What the host needs from a multi-VM workload. */
export interface MultiVmWorkload {
  readonly name: string;
  /** Per VM: guest RAM in 4 KiB pages, the OS image it booted from, and its regions. */
  readonly vms: { memoryPages: number; image: number; regions: GuestRegion[] }[];
  /** Simulated seconds the run lasts (the host idles after the accesses until then). */
  readonly seconds: number;
  /**
   * Fills the record buffer (record cpu = VM index) and lists the indices of its writes; 0 at the end.
   * `host` lets the workload react to the host (phases, a VM that was OOM-killed).
   */
  fill(view: DataView, capacity: number, writes: number[], host: OvercommitHost): number;
  /** The content a store by VM `vm` to guest-virtual page `page` leaves. */
  contentOfWrite(vm: number, page: bigint, sequence: number): PageContent;
  /** The content of a file page (what a page-cache refault re-reads), or undefined for anonymous memory. */
  fileContent(vm: number, page: bigint): PageContent | undefined;
}

export interface GuestStats {
  /** The balloon stats tags 0-9 (docs/overcommit.md §virtio-balloon), kept by the guest. */
  swapIn: number;
  swapOut: number;
  majorFaults: number;
  minorFaults: number;
  pageCacheDropped: number;
  oomKills: number;
  oomDeflations: number;
}

/** One VM on the host, with its guest kernel's view of its memory. */
export class GuestVm {
  readonly gvaToGpa = new Map<bigint, bigint>();
  readonly gpaToGva = new Map<bigint, bigint>();
  /** Anonymous pages the guest swapped out (guest-virtual page -> content). */
  readonly guestSwap = new Map<bigint, PageContent>();
  /** Page-cache pages the guest dropped (re-read from disk on the next touch). */
  readonly droppedFile = new Set<bigint>();
  /** Guest-physical pages the guest freed and has not reused (candidates for free page reporting). */
  readonly freedGpas = new Set<bigint>();
  /** 2 MiB blocks already reported free (PageReported), until the guest uses one of their pages. */
  readonly reportedBlocks = new Set<bigint>();
  alive = true;
  readonly stats: GuestStats = {
    swapIn: 0,
    swapOut: 0,
    majorFaults: 0,
    minorFaults: 0,
    pageCacheDropped: 0,
    oomKills: 0,
    oomDeflations: 0,
  };

  constructor(
    readonly index: number,
    readonly cpu: number,
    readonly vm: Vm,
    readonly tdp: TdpMmu,
    readonly os: GuestOS,
    readonly process: Process,
    readonly memoryPages: number,
    readonly regions: GuestRegion[],
  ) {}

  /** Guest frames in use: the application's pages, page tables and pages held by the balloon. */
  get usedPages(): number {
    return this.os.frames.allocated["4K"] + (this.os.tableFrames?.allocated["4K"] ?? 0);
  }

  get freePages(): number {
    return Math.max(0, this.memoryPages - this.usedPages);
  }

  regionOf(gva: bigint): GuestRegion | undefined {
    for (const region of this.regions)
      if (gva >= region.start && gva < region.start + BigInt(region.pages) * PAGE) return region;
    return undefined;
  }
}

/**
 * The guest's page-table frames, from the gigabyte above its application memory (a separate pageblock
 * group, as Linux keeps unmovable allocations apart), so freed application memory forms whole blocks.
 */
class TableFrames extends FrameAllocator {
  constructor(
    private readonly offset: bigint,
    seed: number,
  ) {
    super(2 ** 30, "sequential", seed);
  }
  alloc(size: PageSize): bigint {
    return super.alloc(size) + this.offset;
  }
  release(base: bigint, size: PageSize): void {
    super.release(base - this.offset, size);
  }
}

/** Guest CPU index -> the machine CPU its vCPU is pinned to. */
class PinnedCpu implements PagingCpu {
  constructor(
    private readonly inner: PagingCpu,
    private readonly cpu: number,
  ) {}
  writeEntry(pa: bigint, value: bigint, level: number): void {
    this.inner.writeEntry(pa, value, level);
  }
  readEntry(pa: bigint): bigint {
    return this.inner.readEntry(pa);
  }
  loadCr3(_cpu: number, value: bigint): void {
    this.inner.loadCr3(this.cpu, value);
  }
  invlpg(_cpu: number, la: bigint): void {
    this.inner.invlpg(this.cpu, la);
  }
  invpcid(_cpu: number, type: number, pcid: number, la: bigint): void {
    this.inner.invpcid(this.cpu, type, pcid, la);
  }
  charge(cycles: number): void {
    this.inner.charge(cycles);
  }
  releaseTable(pa: bigint): void {
    this.inner.releaseTable(pa);
  }
}

export interface TimelineSample {
  seconds: number;
  hostFree: number;
  hostUsed: number;
  usedByVm: number[];
  controllerState: string;
  ksmSharing: number;
  balloonActual: number;
  zswapStored: number;
  swapPages: number;
  exits: number;
  invalidations: number;
}

export class OvercommitHost {
  readonly machine: Machine;
  readonly frames: HostFrames;
  readonly hostMemory: HostMemory;
  readonly vms: GuestVm[] = [];
  readonly oc: OvercommitConfig;
  readonly ksm?: Ksm;
  readonly balloon?: Balloon;
  readonly zswap?: Zswap;
  readonly swap?: HostSwap;
  readonly controller?: Controller;
  /** VM exits the overcommit mechanisms caused, and the invalidations (vCPU shootdowns) they issued. */
  readonly exitsBy: Record<Mechanism, number> = { ksm: 0, balloon: 0, zswap: 0, swap: 0, guest: 0, split: 0 };
  readonly invalidationsBy: Record<Mechanism, number> = {
    ksm: 0,
    balloon: 0,
    zswap: 0,
    swap: 0,
    guest: 0,
    split: 0,
  };
  readonly cyclesBy: Record<Mechanism, number> = {
    ksm: 0,
    balloon: 0,
    zswap: 0,
    swap: 0,
    guest: 0,
    split: 0,
  };
  /** 2M mappings split, by what they were split for. */
  readonly largePagesSplitBy: Record<SplitCause, number> = {
    controller: 0,
    ksm: 0,
    balloon: 0,
    zswap: 0,
    swap: 0,
  };
  /** Simulated time the host idled after the accesses (no vCPU ran). */
  idleCycles = 0;
  readonly timeline: TimelineSample[] = [];
  private nextSample = 0;
  invariantChecks = 0;
  private writeSequence = 0;
  private readonly tick: number;

  constructor(
    readonly config: ResolvedConfig,
    readonly workload: MultiVmWorkload,
    options: { build?: BuildName; checkInvariants?: boolean } = {},
  ) {
    const oc = config.overcommit;
    if (!oc) throw new MemvirtError('an overcommit run needs the config\'s "overcommit" section');
    this.oc = { ...oc, checkInvariants: options.checkInvariants ?? oc.checkInvariants };
    const count = workload.vms.length;
    if (count > L.MAX_CPUS)
      throw new MemvirtError(
        `workload: ${count} VMs, but the machine pins one vCPU per CPU (at most ${L.MAX_CPUS})`,
      );
    const hostPages = Math.floor(config.host.memory / 4096);
    const vmPages = workload.vms.reduce((sum, vm) => sum + vm.memoryPages, 0);
    if (this.oc.admissionRatio > 0 && vmPages > this.oc.admissionRatio * hostPages) {
      throw new MemvirtError(
        `config key "overcommit.admissionRatio": the VMs need ${vmPages} pages, more than ${this.oc.admissionRatio} x the host's ${hostPages} (admission control refuses them)`,
      );
    }
    this.machine = new Machine(
      { ...config.machine, cpus: count },
      {
        build: options.build,
        backedFramesLog2: config.memory.backedFramesLog2,
        memoryLimitMiB: config.memory.limitMiB,
      },
    );
    this.frames = new HostFrames(hostPages, this.machine, config.seed);
    this.frames.reclaim = (pages) => this.directReclaim(pages);
    this.hostMemory = new HostMemory(config.host.memory, config.seed, this.frames);
    for (let index = 0; index < count; index++) this.addVm(index);
    if (this.oc.ksm.enabled) this.ksm = new Ksm(this);
    if (this.oc.balloon.enabled) this.balloon = new Balloon(this);
    if (this.oc.swap.enabled) this.swap = new HostSwap(this);
    if (this.oc.zswap.enabled) this.zswap = new Zswap(this);
    if (this.oc.controller.enabled) this.controller = new Controller(this);
    // Host work runs from budget exits; the finest timer decides how often the core stops.
    const periods = [this.ms(this.oc.timelineIntervalMs)];
    if (this.ksm) periods.push(this.ms(this.oc.ksm.sleepMillisecs));
    if (this.controller) periods.push(this.ms(this.oc.controller.intervalMs));
    if (this.balloon && this.oc.balloon.statsIntervalMs > 0)
      periods.push(this.ms(this.oc.balloon.statsIntervalMs));
    this.tick = Math.max(1000, Math.min(...periods));
    this.machine.setBudget(this.tick);
  }

  private addVm(index: number): void {
    const spec = this.workload.vms[index];
    const config = this.config;
    const vm = new Vm(index + 1, this.hostMemory, "4K", config.hypervisor.vpid ? index + 1 : 0);
    // host.pageSize "2M": THP-like backing, a 2M host page for each region's first touch while one is free.
    if (config.host.pageSize === "2M") vm.largeBacking = this.frames;
    // Guest RAM is the memslot; the guest kernel's allocator counts against memoryPages.
    const guestBytes = Math.max(2 ** 30, Math.ceil((spec.memoryPages * 4096) / 2 ** 30) * 2 ** 30);
    // RAM, then one more gigabyte from which the guest kernel takes its page tables.
    vm.addMemslot(0n, BigInt(guestBytes) + BigInt(2 ** 30));
    const tdp = new TdpMmu(this.machine, vm, this.hostMemory, {
      format: config.mode === "npt" ? "npt" : "ept",
      levels: config.host.levels,
      accessedDirty: config.mode === "npt" || config.hypervisor.eptAccessedDirty,
      costs: config.hypervisor.costs,
      dirtyLog: "off",
      dirtyLogIntervalCycles: config.hypervisor.dirtyLogIntervalCycles,
      cpus: 1,
      cpuIds: [index],
    });
    const os = new GuestOS(
      new PinnedCpu(tdp.cpu, index),
      { ...config.guest, memory: guestBytes, processes: 1, quantum: 0 },
      1,
      config.seed + index,
      new TableFrames(BigInt(guestBytes), config.seed + index),
    );
    tdp.boot(this.machine);
    let cr4 = CR4_PAE;
    if (config.guest.globalPages) cr4 |= CR4_PGE;
    if (config.guest.pcid) cr4 |= CR4_PCIDE;
    this.machine.setRegs(index, {
      cr0: CR0_PG | CR0_WP | CR0_PE,
      cr4,
      efer: EFER_LME | EFER_LMA | EFER_NXE,
      cpl: 3,
    });
    const process = os.createProcess();
    for (const region of spec.regions) {
      os.addVma(
        process,
        region.start,
        region.start + BigInt(region.pages) * PAGE,
        { writable: !region.file, user: true, executable: false },
        "4K",
      );
    }
    os.switchTo(0, process);
    this.vms.push(new GuestVm(index, index, vm, tdp, os, process, spec.memoryPages, spec.regions));
  }

  // --- time ---------------------------------------------------------------------------------------

  /** Simulated time in cycles: everything the machine charged, plus idle time. */
  now(): number {
    return this.machine.counter(1) + this.idleCycles;
  }

  /** Simulated milliseconds in cycles. */
  ms(milliseconds: number): number {
    return Math.round(milliseconds * this.oc.cpuMHz * 1000);
  }

  us(microseconds: number): number {
    return Math.round(microseconds * this.oc.cpuMHz);
  }

  seconds(cycles = this.now()): number {
    return cycles / (this.oc.cpuMHz * 1e6);
  }

  // --- costs and accounting ------------------------------------------------------------------------

  /** Host work a mechanism did (ksmd's scan, compression, the balloon device). */
  charge(mechanism: Mechanism, cycles: number, category = CYCLES_OVERCOMMIT): void {
    if (cycles <= 0) return;
    this.cyclesBy[mechanism] += Math.round(cycles);
    this.machine.chargeCycles(cycles, category);
  }

  /**
   * A VM exit a mechanism caused (a COW break, a fault on a compressed page, a balloon message).
   * `transition`: the exit and entry are still to happen (a virtqueue kick); nested faults already
   * left the guest in the core.
   */
  exit(mechanism: Mechanism, vm: GuestVm, transition: boolean): number {
    this.exitsBy[mechanism]++;
    const cycles = this.config.hypervisor.costs.exit;
    this.machine.chargeCycles(cycles, CYCLES_VM_EXIT);
    if (transition) this.machine.vmExitEntry(vm.cpu);
    return cycles;
  }

  /**
   * kvm_flush_remote_tlbs for `vm` after its EPT changed: INVEPT single-context on every CPU running
   * one of its vCPUs (an IPI each), so no TLB, nested-TLB or paging-structure-cache entry keeps a
   * translation to a frame the EPT no longer maps there.
   */
  flush(vm: GuestVm, mechanism: Mechanism): number {
    vm.tdp.flushRemoteTlbs();
    this.invalidationsBy[mechanism] += vm.tdp.cpuIds.length;
    const cycles = this.oc.shootdownCycles * vm.tdp.cpuIds.length;
    this.charge(mechanism, cycles);
    return cycles;
  }

  /**
   * Breaks the 2M mapping of `gpa`'s region (KVM's eager huge page split; vSphere breaking large pages):
   * the EPT leaf becomes a table of 512 4K leaves to the same frames with the same rights, every vCPU's
   * translations are shot down, and from then on the region's backing is 512 frames that KSM, the
   * balloon, zswap and swap take one by one. Returns whether the region was 2M-backed.
   */
  breakLargePage(vm: GuestVm, gpa: bigint, cause: SplitCause): boolean {
    const region = gpa & ~0x1f_ffffn;
    const hpa = vm.vm.largeAt(region);
    if (hpa === undefined) return false;
    // The table comes from the deposit made when the 2M leaf was installed: nothing is allocated.
    const mapped = vm.tdp.splitLarge(region);
    vm.vm.splitLarge(region);
    this.frames.splitLarge(hpa);
    this.largePagesSplitBy[cause]++;
    // Building the table is the TDP MMU's work; a region backed but not mapped yet needs no flush.
    this.charge("split", this.config.hypervisor.costs.tdpFault, CYCLES_TDP);
    if (mapped) this.flush(vm, "split");
    return true;
  }

  /** Runs the invariant checker when it is on (tests, --check-invariants). */
  check(step: string): void {
    if (!this.oc.checkInvariants) return;
    this.invariantChecks++;
    checkInvariants(this, step);
  }

  // --- guest memory as the host sees it -------------------------------------------------------------

  /** A key for (VM, guest-physical page) in the mechanisms' maps. */
  key(vm: GuestVm, gpa: bigint): bigint {
    return (BigInt(vm.index) << 56n) | (gpa & ~0xfffn);
  }

  vmOfKey(key: bigint): GuestVm {
    return this.vms[Number(key >> 56n)];
  }

  gpaOfKey(key: bigint): bigint {
    return key & ((1n << 56n) - 1n);
  }

  /** The host frame backing a guest page now, or undefined (never touched, ballooned, reclaimed). */
  frameOf(vm: GuestVm, gpa: bigint): bigint | undefined {
    return vm.vm.backingAt(gpa & ~0xfffn);
  }

  /** What a guest page holds, wherever it is (host memory, zswap, swap). */
  contentOf(vm: GuestVm, gpa: bigint): PageContent {
    const key = this.key(vm, gpa);
    const parked = this.zswap?.contentOf(key) ?? this.swap?.contentOf(key);
    if (parked) return parked;
    const hpa = this.frameOf(vm, gpa);
    return hpa === undefined ? ZERO_CONTENT : this.frames.contentOf(hpa);
  }

  /** Brings a reclaimed page back into host memory (a fault on it, or the guest touching it itself). */
  private restore(vm: GuestVm, gpa: bigint, mechanismFault: boolean): Mechanism | undefined {
    const key = this.key(vm, gpa);
    if (this.zswap?.holds(key)) {
      this.zswap.load(vm, gpa, mechanismFault);
      return "zswap";
    }
    if (this.swap?.holds(key)) {
      this.swap.swapIn(vm, gpa, mechanismFault);
      return "swap";
    }
    return undefined;
  }

  /**
   * The guest kernel or a device model writes a whole page (a disk read into the page cache, the
   * guest's swap-in): the host backs it, breaking a KSM share or bringing it back from swap first.
   */
  writeGuestPage(vm: GuestVm, gpa: bigint, content: PageContent): void {
    this.restore(vm, gpa, false);
    const key = this.key(vm, gpa);
    if (this.ksm?.isSharer(key)) this.ksm.breakCow(vm, gpa, false);
    const hpa = vm.vm.hostAddress(gpa & ~0xfffn);
    this.frames.setContent(hpa, content);
  }

  /** The guest reads a whole page itself (its swap-out): a reclaimed page must come back first. */
  readGuestPage(vm: GuestVm, gpa: bigint): PageContent {
    const where = this.restore(vm, gpa, false);
    // The guest swapping out a page the host already swapped or compressed: double paging.
    if (where && this.swap) this.swap.counters.double_paging++;
    return this.contentOf(vm, gpa);
  }

  // --- running ---------------------------------------------------------------------------------------

  /** Runs the workload to its end, then idles the host until the workload's duration. */
  run(): void {
    const writes: number[] = [];
    const capacity = L.RECORD_CAPACITY;
    while (true) {
      writes.length = 0;
      const count = this.workload.fill(this.machine.recordView(), capacity, writes, this);
      if (count === 0) break;
      this.replay(count, writes);
    }
    this.idleUntil(this.ms(this.workload.seconds * 1000));
    this.controller?.finish();
    this.sampleTimeline(true);
  }

  /** Lets simulated time pass with no vCPU running, firing the host's timers on the way. */
  idleUntil(target: number): void {
    while (this.now() < target) {
      const next = Math.min(target, this.nextTimer());
      if (next > this.now()) this.idleCycles += next - this.now();
      this.runTimers();
    }
  }

  private nextTimer(): number {
    const times = [this.nextSample];
    if (this.ksm) times.push(this.ksm.nextAt);
    if (this.controller) times.push(this.controller.nextAt);
    if (this.balloon) times.push(this.balloon.nextAt);
    return Math.min(...times);
  }

  /** Fires every timer that is due, in a fixed order so runs are deterministic. */
  runTimers(): void {
    for (let guard = 0; guard < 1_000_000; guard++) {
      const now = this.now();
      if (this.nextSample <= now) this.sampleTimeline(false);
      else if (this.controller && this.controller.nextAt <= now) this.controller.step();
      else if (this.balloon && this.balloon.nextAt <= now) this.balloon.periodic();
      else if (this.ksm && this.ksm.nextAt <= now) this.ksm.wake();
      else return;
    }
    throw new MemvirtError("host timers did not settle", 1);
  }

  private sampleTimeline(final: boolean): void {
    if (!final) this.nextSample += this.ms(this.oc.timelineIntervalMs);
    this.timeline.push({
      seconds: +this.seconds().toFixed(6),
      hostFree: this.frames.freeFrames,
      hostUsed: this.frames.used + this.frames.poolFrames,
      usedByVm: this.vms.map((vm) => (vm.vm.backedBytes > 0n ? Number(vm.vm.backedBytes / PAGE) : 0)),
      controllerState: this.controller?.state ?? "-",
      ksmSharing: this.ksm?.counters.pages_sharing ?? 0,
      balloonActual: this.balloon ? this.vms.reduce((sum, vm) => sum + this.balloon!.actual(vm), 0) : 0,
      zswapStored: this.zswap?.counters.stored_pages ?? 0,
      swapPages: this.swap?.counters.swap_pages ?? 0,
      exits: Object.values(this.exitsBy).reduce((a, b) => a + b, 0),
      invalidations: Object.values(this.invalidationsBy).reduce((a, b) => a + b, 0),
    });
  }

  /** Runs the given accesses (VM index, guest-virtual address, write) on their vCPUs. */
  runAccesses(accesses: [number, bigint, boolean][]): void {
    for (let start = 0; start < accesses.length; start += L.RECORD_CAPACITY) {
      const view = this.machine.recordView();
      const writes: number[] = [];
      const batch = accesses.slice(start, start + L.RECORD_CAPACITY);
      batch.forEach(([vm, la, write], i) => {
        view.setBigUint64(i * L.RECORD_SIZE, la, true);
        view.setUint8(i * L.RECORD_SIZE + L.REC_KIND, write ? 1 : 0);
        view.setUint8(i * L.RECORD_SIZE + L.REC_SIZE, 8);
        view.setUint16(i * L.RECORD_SIZE + L.REC_CPU, vm, true);
        if (write) writes.push(i);
      });
      this.replay(batch.length, writes);
    }
  }

  /** Replays records [0, count), applying each completed write's content before host work can run. */
  private replay(count: number, writes: number[]): void {
    let index = 0;
    let nextWrite = 0;
    const applyWrites = (until: number) => {
      // Host work may have grown linear memory (detaching old views): take a fresh one.
      const view = this.machine.recordView();
      while (nextWrite < writes.length && writes[nextWrite] < until) {
        const record = writes[nextWrite++];
        if (record < index) continue;
        this.applyWrite(view, record);
      }
    };
    while (index < count) {
      this.machine.replay(index, count);
      const exit = this.machine.exit();
      // Records before the exit completed (a budget exit's index is the record after the slice).
      applyWrites(exit.reason === "none" ? count : exit.index);
      if (exit.reason === "none") return;
      index = this.handleExit(exit);
    }
  }

  /** A completed store: the page it reached now holds what the workload wrote. */
  private applyWrite(view: DataView, record: number): void {
    const offset = record * L.RECORD_SIZE;
    const gva = view.getBigUint64(offset + L.REC_ADDR, true) & ~0xfffn;
    const vm = this.vms[view.getUint16(offset + L.REC_CPU, true)];
    const gpa = vm.gvaToGpa.get(gva);
    if (gpa === undefined) return; // the store was dropped (SIGSEGV after an OOM kill)
    const hpa = this.frameOf(vm, gpa);
    if (hpa === undefined)
      throw new MemvirtError(`a completed store to 0x${gpa.toString(16)} has no host page`, 1);
    this.frames.setContent(hpa, this.workload.contentOfWrite(vm.index, gva, ++this.writeSequence));
  }

  private handleExit(exit: ExitRecord): number {
    switch (exit.reason) {
      case "pageFault": {
        const vm = this.vms[exit.cpu];
        if (this.guestPageFault(vm, exit.linear, exit.qualification) === "retry") return exit.index;
        this.machine.completePending();
        return exit.index + 1;
      }
      case "eptViolation":
      case "eptMisconfig":
      case "npf": {
        const vm = this.vms[exit.cpu];
        if (this.nestedFault(vm, exit) === "retry") return exit.index;
        this.machine.completePending();
        return exit.index + 1;
      }
      case "budget":
        this.runTimers();
        return exit.index;
      case "generalProtection":
        this.machine.completePending();
        return exit.index + 1;
      default:
        throw new MemvirtError(`record ${exit.index}: unexpected exit ${exit.reason}`, 1);
    }
  }

  /**
   * An EPT violation: a write to a KSM page breaks the share; a compressed or swapped page comes back;
   * anything else is the TDP MMU's ordinary fault.
   */
  private nestedFault(vm: GuestVm, exit: ExitRecord): ExitAction {
    const gpa = exit.guestPhysical;
    const key = this.key(vm, gpa);
    // EPT qualification bit 1 and #NPF EXITINFO1 bit 1 both mean a write.
    const write = (exit.qualification & 2n) !== 0n;
    if (this.ksm?.isSharer(key) && write) {
      this.ksm.breakCow(vm, gpa, true);
      this.check("ksm cow break");
      return "retry";
    }
    const where = this.restore(vm, gpa, true);
    if (where) {
      this.check(`${where} fault`);
      return "retry";
    }
    this.swap?.touched(key);
    return vm.tdp.onNestedFault(exit);
  }

  /**
   * The guest kernel's #PF: a page-cache refault or a swap-in is a major fault that reads the disk;
   * with no free guest memory it reclaims (page cache, then swap), then asks the balloon to deflate on
   * OOM, then OOM-kills.
   */
  guestPageFault(vm: GuestVm, la: bigint, errorCode: bigint): "retry" | "segv" {
    if (!vm.alive) return "segv";
    const page = la & ~0xfffn;
    if (vm.freePages < 2) this.guestReclaim(vm, 2 - vm.freePages, true);
    if (!vm.alive) return "segv";
    const outcome = vm.os.pageFault(0, la, errorCode);
    if (outcome !== "retry") return outcome;
    const leaf = vm.os.lookup(vm.process, page);
    if (!leaf) throw new MemvirtError(`guest fault at 0x${la.toString(16)} left no mapping`, 1);
    const gpa = leaf.entry & ADDRESS_MASK;
    vm.gvaToGpa.set(page, gpa);
    vm.gpaToGva.set(gpa, page);
    vm.freedGpas.delete(gpa);
    vm.reportedBlocks.delete(gpa >> 21n);
    const swapped = vm.guestSwap.get(page);
    const file = this.workload.fileContent(vm.index, page);
    if (swapped) {
      vm.guestSwap.delete(page);
      vm.stats.swapIn++;
      vm.stats.majorFaults++;
      this.charge("guest", this.us(this.oc.balloon.guestDiskUs), CYCLES_DEVICE_WAIT);
      this.writeGuestPage(vm, gpa, swapped);
    } else if (file) {
      // The page cache fills from the virtual disk: a major fault the first time and after a drop.
      vm.stats.majorFaults++;
      vm.droppedFile.delete(page);
      this.charge("guest", this.us(this.oc.balloon.guestDiskUs), CYCLES_DEVICE_WAIT);
      this.writeGuestPage(vm, gpa, file);
    } else {
      vm.stats.minorFaults++;
    }
    return "retry";
  }

  /**
   * Pages the guest can give without OOM-killing: free memory, clean page cache and swap room, less
   * a small reserve (1/64 of its memory) so its application keeps running. Balloon policies use this
   * (the stats queue's available-memory tag) to size their targets.
   */
  guestAvailable(vm: GuestVm): number {
    if (!vm.alive) return 0;
    let cache = 0;
    for (const gva of vm.gvaToGpa.keys()) if (this.workload.fileContent(vm.index, gva)) cache++;
    const swapRoom = Math.max(0, this.oc.balloon.guestSwapPages - vm.guestSwap.size);
    return Math.max(0, vm.freePages + cache + swapRoom - Math.ceil(vm.memoryPages / 64));
  }

  /** Removes one application page from the guest (its frame goes back to the guest allocator). */
  private unmapGuestPage(vm: GuestVm, gva: bigint): void {
    const gpa = vm.gvaToGpa.get(gva);
    if (gpa === undefined) return;
    vm.os.unmapRange(vm.process, gva, PAGE);
    vm.gvaToGpa.delete(gva);
    vm.gpaToGva.delete(gpa);
    vm.freedGpas.add(gpa);
    this.balloon?.noteFree(vm);
  }

  /**
   * The guest frees `pages` frames under memory pressure: the page cache shrinks first, then
   * anonymous pages go to the guest's swap; with neither left, a deflate-on-OOM balloon gives 256
   * pages back, else the OOM killer ends the application (when `oom`). Returns pages freed.
   */
  guestReclaim(vm: GuestVm, pages: number, oom: boolean): number {
    let freed = 0;
    for (const [gva] of vm.gvaToGpa) {
      if (freed >= pages) break;
      if (!this.workload.fileContent(vm.index, gva)) continue;
      this.unmapGuestPage(vm, gva);
      vm.droppedFile.add(gva);
      vm.stats.pageCacheDropped++;
      freed++;
    }
    const swapRoom = this.oc.balloon.guestSwapPages - vm.guestSwap.size;
    if (freed < pages && swapRoom > 0) {
      for (const [gva, gpa] of vm.gvaToGpa) {
        if (freed >= pages || vm.guestSwap.size >= this.oc.balloon.guestSwapPages) break;
        const content = this.readGuestPage(vm, gpa);
        this.charge("guest", this.us(this.oc.balloon.guestDiskUs), CYCLES_DEVICE_WAIT);
        this.unmapGuestPage(vm, gva);
        vm.guestSwap.set(gva, content);
        vm.stats.swapOut++;
        freed++;
      }
    }
    if (freed < pages && oom) {
      if (this.balloon && this.oc.balloon.deflateOnOom && this.balloon.actual(vm) > 0) {
        vm.stats.oomDeflations++;
        freed += this.balloon.deflateOnOom(vm);
      } else {
        this.oomKill(vm);
      }
    }
    return freed;
  }

  /** The guest's OOM killer ends the application: its pages are freed and its later accesses fault. */
  private oomKill(vm: GuestVm): void {
    vm.stats.oomKills++;
    vm.alive = false;
    for (const gva of [...vm.gvaToGpa.keys()]) this.unmapGuestPage(vm, gva);
    vm.process.vmas.length = 0;
    vm.guestSwap.clear();
  }

  /**
   * An allocation found no free host frame: reclaim synchronously, in kswapd-sized batches of 32
   * (SWAP_CLUSTER_MAX), until a frame is free; compressed pages still occupy the pool, so one page
   * compressed is not always one frame gained.
   */
  private directReclaim(_pages: number): number {
    if (this.reclaiming) return 0;
    this.reclaiming = true;
    let freed = 0;
    try {
      for (let round = 0; round < 256 && this.frames.freeFrames === 0; round++) {
        let progress = this.zswap ? this.zswap.reclaim(32, true) : 0;
        if (progress === 0 && this.swap) progress = this.swap.reclaim(32, true);
        if (progress === 0 && this.balloon) progress = this.balloonReclaim(32);
        if (progress === 0) break;
        freed += progress;
      }
    } finally {
      this.reclaiming = false;
    }
    return freed;
  }

  private reclaiming = false;

  /**
   * With nothing to compress or swap, the allocation blocks (vSphere's low state) while every VM's
   * balloon grows by a share of `pages`; it frees host memory as far as the guests give backed pages.
   */
  private balloonReclaim(pages: number): number {
    const balloon = this.balloon;
    if (!balloon) return 0;
    let grew = 0;
    const alive = this.vms.filter((vm) => vm.alive);
    for (const vm of alive) {
      const before = balloon.actual(vm);
      const step = Math.min(Math.ceil(pages / alive.length), this.guestAvailable(vm));
      if (step > 0) grew += balloon.setTarget(vm, before + step) - before;
    }
    // Progress is the balloons growing: the guests' free pages come first and free no host frame.
    return grew;
  }

  /** Exits the VMs' TDP MMUs took, by reason, over all VMs (the mechanisms count theirs in exitsBy). */
  exitsByReason(): Record<string, number> {
    const total: Record<string, number> = {};
    for (const vm of this.vms)
      for (const [reason, n] of Object.entries(vm.tdp.exits())) total[reason] = (total[reason] ?? 0) + n;
    return total;
  }
}
