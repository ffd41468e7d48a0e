// An overcommitted host: several VMs on one machine and one host memory, each VM with its own EPT/NPT
// (TDP MMU), VPID and guest kernel, pinned one vCPU to one physical CPU so each has its own TLBs and
// caches. Host memory has a capacity; the overcommit mechanisms (KSM, the balloon, zswap, swap and the
// controller that drives them) are plug-ins on the host's nested-fault hooks and timers, handed this
// host's memory-management services (services.ts). They change EPT entries and invalidate every
// vCPU's stale translations as KVM does, paying for it in exits and cycles. With host.pageSize "2M"
// regions are backed THP-like by 2M pages, and broken into 4K mappings by the controller or by a
// mechanism that needs one of their pages. The VMs run a generated multi-VM workload or one trace each.
import type { ResolvedConfig } from "../config/config.js";
import * as L from "../core/layout.js";
import { MemvirtError } from "../core/machine.js";
import type { BuildName } from "../core/wasm.js";
import { ADDRESS_MASK, type FaultOutcome } from "../guest/os.js";
import type { HostTimer, RecordsHook } from "../host/hooks.js";
import { Host } from "../host/host.js";
import { CYCLES_TDP, CYCLES_VM_EXIT, type NestedTables } from "../hypervisor/technique.js";
import { TECHNIQUES } from "../hypervisor/techniques.js";
import { drain, type Steps } from "../util/steps.js";
import { Balloon } from "./balloon.js";
import type { OvercommitConfig } from "./config.js";
import { type PageContent, ZERO_CONTENT } from "./content.js";
import { Controller } from "./controller.js";
import { type GuestMemoryModel, type GuestRegion, GuestVm, TableFrames } from "./guest.js";
import { checkInvariants } from "./invariants.js";
import { Ksm } from "./ksm.js";
import { HostFrames } from "./memory.js";
import {
  CYCLES_DEVICE_WAIT,
  CYCLES_OVERCOMMIT,
  type Mechanism,
  type OvercommitServices,
  type SplitCause,
} from "./services.js";
import { HostSwap, Zswap } from "./zswap.js";

export { type GuestRegion, GuestVm } from "./guest.js";
export {
  CYCLES_DEVICE_WAIT,
  CYCLES_OVERCOMMIT,
  MECHANISMS,
  type Mechanism,
  type SplitCause,
} from "./services.js";

const PAGE = 0x1000n;
const KIND_MASK = 0x7f;
const KIND_WRITE = 1;
const KIND_SS_WRITE = 4;

/** What the host needs to know of its VMs: their memory and what their pages hold. */
export interface MultiVmLayout {
  readonly name: string;
  /** Per VM: guest RAM in 4 KiB pages, the OS image it booted from, and its regions. */
  readonly vms: { memoryPages: number; image: number; regions: GuestRegion[] }[];
  /** Simulated seconds the run lasts (the host idles after the accesses until then). */
  readonly seconds: number;
  /** The content a store by VM `vm` to guest-virtual page `page` leaves. */
  contentOfWrite(vm: number, page: bigint, sequence: number): PageContent;
  /** The content of a file page (what a page-cache refault re-reads), or undefined for anonymous memory. */
  fileContent(vm: number, page: bigint): PageContent | undefined;
}

/** A generated multi-VM workload: the layout and the accesses. */
export interface MultiVmWorkload extends MultiVmLayout {
  /**
   * Fills the record buffer (record cpu = VM index); 0 at the end. `host` tells which VMs still run
   * (an OOM-killed application issues no more accesses).
   */
  fill(
    view: DataView,
    capacity: number,
    host: { readonly vms: readonly { readonly alive: boolean }[] },
  ): number;
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

export class OvercommitHost extends Host implements OvercommitServices, GuestMemoryModel, RecordsHook {
  readonly frames: HostFrames;
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
  readonly timeline: TimelineSample[] = [];
  private readonly sampler: TimelineSampler;
  invariantChecks = 0;
  private writeSequence = 0;

  constructor(
    config: ResolvedConfig,
    readonly workload: MultiVmLayout,
    options: { build?: BuildName; checkInvariants?: boolean } = {},
  ) {
    const oc = OvercommitHost.admit(config, workload);
    const hostPages = Math.floor(config.host.memory / 4096);
    super(config, {
      build: options.build,
      cpus: workload.vms.length,
      virtual: true,
      frames: (machine) => new HostFrames(hostPages, machine, config.seed),
    });
    this.oc = { ...oc, checkInvariants: options.checkInvariants ?? oc.checkInvariants };
    this.frames = this.memory?.frames as HostFrames;
    this.frames.reclaimer = this;
    for (let index = 0; index < workload.vms.length; index++) this.addVm(index);
    // The mechanisms, each handed these services and the peers it works with.
    const on = this.oc;
    const ksm = on.ksm.enabled ? new Ksm(this) : undefined;
    const swap = on.swap.enabled ? new HostSwap(this, ksm) : undefined;
    const zswap = on.zswap.enabled ? new Zswap(this, swap, ksm) : undefined;
    const balloon = on.balloon.enabled ? new Balloon(this, { ksm, zswap, swap }) : undefined;
    const controller = on.controller.enabled
      ? new Controller(this, { ksm, balloon, zswap, swap })
      : undefined;
    this.ksm = ksm;
    this.swap = swap;
    this.zswap = zswap;
    this.balloon = balloon;
    this.controller = controller;
    // Nested faults: a write to a KSM page breaks the share; a compressed or swapped page comes back;
    // anything else is the TDP MMU's ordinary fault.
    for (const hook of [ksm, zswap, swap]) if (hook) this.addNestedFaultHook(hook);
    this.addRecordsHook(this);
    // Host timers, in the order they fire when due together; the finest sets the core's budget.
    this.sampler = new TimelineSampler(this);
    for (const timer of [this.sampler, controller, balloon, ksm]) if (timer) this.addTimer(timer);
    this.arm();
  }

  /** The overcommit section to run with, after admission control. */
  private static admit(config: ResolvedConfig, workload: MultiVmLayout): OvercommitConfig {
    const oc = config.overcommit;
    if (!oc) throw new MemvirtError('an overcommit run needs the config\'s "overcommit" section');
    const count = workload.vms.length;
    if (count > L.MAX_CPUS)
      throw new MemvirtError(
        `workload: ${count} VMs, but the machine pins one vCPU per CPU (at most ${L.MAX_CPUS})`,
      );
    const hostPages = Math.floor(config.host.memory / 4096);
    const vmPages = workload.vms.reduce((sum, vm) => sum + vm.memoryPages, 0);
    if (oc.admissionRatio > 0 && vmPages > oc.admissionRatio * hostPages) {
      throw new MemvirtError(
        `config key "overcommit.admissionRatio": the VMs need ${vmPages} pages, more than ${oc.admissionRatio} x the host's ${hostPages} (admission control refuses them)`,
      );
    }
    return oc;
  }

  private addVm(index: number): void {
    const spec = this.workload.vms[index];
    const config = this.config;
    // Guest RAM is the memslot; the guest kernel's allocator counts against memoryPages.
    const guestBytes = Math.max(2 ** 30, Math.ceil((spec.memoryPages * 4096) / 2 ** 30) * 2 ** 30);
    const guest = this.addGuest({
      technique: TECHNIQUES[config.mode],
      // The host's memory management owns the nested tables; no VMM logs dirty pages here.
      settings: {
        hypervisor: { ...config.hypervisor, dirtyLog: "off" },
        hostLevels: config.host.levels,
        guestMemory: guestBytes,
      },
      cpus: 1,
      guest: { ...config.guest, memory: guestBytes, processes: 1, quantum: 0 },
      seed: config.seed + index,
      // RAM, then one more gigabyte from which the guest kernel takes its page tables.
      memslotBytes: BigInt(guestBytes) + BigInt(2 ** 30),
      backing: "4K",
      // host.pageSize "2M": THP-like backing, a 2M host page for each region's first touch while one is free.
      largeBacking: config.host.pageSize === "2M" ? this.frames : undefined,
      tableFrames: new TableFrames(BigInt(guestBytes), config.seed + index),
    });
    const { os, vm } = guest;
    // The config's rules let only modes with nested tables overcommit (hypervisor/techniques.ts).
    if (!vm || !TECHNIQUES[config.mode].nestedTables)
      throw new MemvirtError(`mode "${config.mode}" has no nested tables for the host to manage`, 1);
    const process = os.createProcess();
    for (const region of spec.regions) {
      os.addVma(
        process,
        region.start,
        region.start + BigInt(region.pages) * PAGE,
        { writable: !region.file, user: true, executable: region.executable ?? false },
        "4K",
      );
    }
    os.switchTo(0, process);
    const tables = guest.technique as unknown as NestedTables;
    const model = new GuestVm(
      index,
      guest.firstCpu,
      vm,
      tables,
      os,
      process,
      spec.memoryPages,
      spec.regions,
      this,
    );
    guest.kernel = model;
    this.vms.push(model);
  }

  // --- time ---------------------------------------------------------------------------------------

  get costs() {
    return this.config.hypervisor.costs;
  }

  fileContent(vm: number, page: bigint): PageContent | undefined {
    return this.workload.fileContent(vm, page);
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
    drain(this.runSteps());
    this.finish();
  }

  /** The workload's accesses as steps (util/steps.ts), one batch each; `finish` ends the run after them. */
  *runSteps(): Steps<void> {
    const workload = this.workload as Partial<MultiVmWorkload>;
    if (!workload.fill) throw new MemvirtError("this host's VMs have no generated workload to run", 1);
    while (true) {
      const count = workload.fill(this.machine.recordView(), L.RECORD_CAPACITY, this);
      if (count === 0) return;
      this.replay(count);
      yield count;
    }
  }

  /** The end of a run: the host idles until the run's duration, then the books are closed. */
  finish(): void {
    this.idleUntil(this.ms(this.workload.seconds * 1000));
    this.controller?.finish();
    this.sampleTimeline(true);
  }

  sampleTimeline(final: boolean): void {
    if (!final) this.sampler.nextAt += this.ms(this.oc.timelineIntervalMs);
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
      const batch = accesses.slice(start, start + L.RECORD_CAPACITY);
      batch.forEach(([vm, la, write], i) => {
        view.setBigUint64(i * L.RECORD_SIZE, la, true);
        view.setUint8(i * L.RECORD_SIZE + L.REC_KIND, write ? 1 : 0);
        view.setUint8(i * L.RECORD_SIZE + L.REC_SIZE, 8);
        view.setUint16(i * L.RECORD_SIZE + L.REC_CPU, this.vms[vm].cpu, true);
      });
      this.replay(batch.length);
    }
  }

  /**
   * Completed stores: the pages they reached now hold what the VM wrote, before any host work (a KSM
   * scan) can look at them.
   */
  recordsCompleted(start: number, end: number): void {
    // Host work may have grown linear memory (detaching old views): take a fresh one.
    const view = this.machine.recordView();
    for (let record = start; record < end; record++) {
      const offset = record * L.RECORD_SIZE;
      const kind = view.getUint8(offset + L.REC_KIND) & KIND_MASK;
      if (kind !== KIND_WRITE && kind !== KIND_SS_WRITE) continue;
      const gva = view.getBigUint64(offset + L.REC_ADDR, true) & ~0xfffn;
      const vm = this.vms[view.getUint16(offset + L.REC_CPU, true)];
      const gpa = vm.gvaToGpa.get(gva);
      if (gpa === undefined) continue; // the store was dropped (SIGSEGV after an OOM kill)
      const hpa = this.frameOf(vm, gpa);
      if (hpa === undefined)
        throw new MemvirtError(`a completed store to 0x${gpa.toString(16)} has no host page`, 1);
      this.frames.setContent(hpa, this.workload.contentOfWrite(vm.index, gva, ++this.writeSequence));
    }
  }

  /**
   * The guest kernel's #PF: a page-cache refault or a swap-in is a major fault that reads the disk;
   * with no free guest memory it reclaims (page cache, then swap), then asks the balloon to deflate on
   * OOM, then OOM-kills.
   */
  guestPageFault(vm: GuestVm, la: bigint, errorCode: bigint): FaultOutcome {
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
    const file = this.fileContent(vm.index, page);
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
    for (const gva of vm.gvaToGpa.keys()) if (this.fileContent(vm.index, gva)) cache++;
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
      if (!this.fileContent(vm.index, gva)) continue;
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
  directReclaim(_pages: number): number {
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
    for (const guest of this.guests)
      for (const [reason, n] of Object.entries(guest.technique.exits()))
        total[reason] = (total[reason] ?? 0) + n;
    return total;
  }
}

/** The timeline's samples, every overcommit.timelineIntervalMs. */
class TimelineSampler implements HostTimer {
  nextAt = 0;

  constructor(private readonly host: OvercommitHost) {}

  get period(): number {
    return this.host.ms(this.host.oc.timelineIntervalMs);
  }

  fire(): void {
    this.host.sampleTimeline(false);
  }
}

export const OVERCOMMIT_CLASSES = { OvercommitHost, GuestVm, TableFrames, HostFrames, TimelineSampler };
