// KVM's TDP MMU for Intel EPT and AMD NPT: the hypervisor fills the nested tables lazily, on the EPT
// violations (#NPFs) the hardware raises, mapping guest-physical pages onto the VM's host backing with
// the largest page the backing and the memslot allow, and tracks dirty pages by write protection, by
// scanning the nested dirty flags, or by draining the page-modification log the CPUs write (Intel PML).
import { PML_ENTRIES } from "../core/layout.js";
import type { ExitRecord, Machine } from "../core/machine.js";
import { PAGE_SHIFT, type PageSize } from "../core/types.js";
import { type PagingCpu, readRange, type TlbFlush } from "../guest/paging-cpu.js";
import {
  CYCLES_EMULATION,
  CYCLES_TDP,
  type DirtyLogMode,
  type ExitAction,
  ExitCounter,
  GuestCpu,
  type HypervisorCosts,
  type IpiDelivery,
  type NestedTables,
  type TechniqueModule,
  VirtualIpis,
  type VirtualizationTechnique,
} from "./technique.js";
import type { HostMemory, Vm } from "./vm.js";

const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;
const LEVEL_OF: Record<PageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };
const EPT_RWX = 7n;
const EPT_WB = 6n << 3n;
const EPT_LARGE = 1n << 7n;
const X86_P = 1n;
const X86_RW = 2n;
const X86_US = 4n;
const X86_PS = 1n << 7n;

export interface TdpOptions {
  format: "ept" | "npt";
  levels: 4 | 5;
  /** EPTP bit 6: the hardware keeps A/D flags in EPT entries (NPT always does). */
  accessedDirty: boolean;
  costs: HypervisorCosts;
  dirtyLog: DirtyLogMode;
  cpus: number;
  /** The machine CPUs this VM's vCPUs run on (default 0..cpus-1); the overcommit host pins one VM per CPU. */
  cpuIds?: number[];
  /** Cycles between dirty-log harvests while dirty logging is on. */
  dirtyLogIntervalCycles: number;
  /** How guest IPIs reach the other vCPUs (default "exit"). */
  ipi?: IpiDelivery;
}

export interface TdpStats {
  pf_taken: number;
  pf_fixed: number;
  pf_fast: number;
  pf_mmio: number;
  pages_4k: number;
  pages_2m: number;
  pages_1g: number;
  remote_tlb_flush: number;
  dirty_pages: number;
  dirty_log_harvests: number;
  /** Page-modification logging: log-full exits, entries drained into the dirty log, and the drains' cycles. */
  pml_full_exits: number;
  pml_drained: number;
  pml_drain_cycles: number;
  /** Write-protect and D-flag harvests: the nested leaves they visit, and those visits' cycles. */
  dirty_scan_leaves: number;
  dirty_scan_cycles: number;
  tables: number;
}

export class TdpMmu implements VirtualizationTechnique, NestedTables {
  readonly name: "ept" | "npt";
  readonly cpu: PagingCpu;
  readonly root: bigint;
  readonly counters: TdpStats = {
    pf_taken: 0,
    pf_fixed: 0,
    pf_fast: 0,
    pf_mmio: 0,
    pages_4k: 0,
    pages_2m: 0,
    pages_1g: 0,
    remote_tlb_flush: 0,
    dirty_pages: 0,
    dirty_log_harvests: 0,
    pml_full_exits: 0,
    pml_drained: 0,
    pml_drain_cycles: 0,
    dirty_scan_leaves: 0,
    dirty_scan_cycles: 0,
    tables: 1,
  };
  /** Each vCPU's page-modification log (machine CPU -> host-physical address), with dirtyLog "pml". */
  private readonly pmlLogs = new Map<number, bigint>();
  private readonly exitCounter: ExitCounter;
  private readonly ipis: VirtualIpis;
  /** The table set aside for splitting each 2M leaf of THP-like backing (region base -> table frame). */
  private readonly deposited = new Map<bigint, bigint>();

  constructor(
    readonly machine: Machine,
    readonly vm: Vm,
    readonly host: HostMemory,
    readonly options: TdpOptions,
  ) {
    this.name = options.format;
    this.root = host.table();
    this.exitCounter = new ExitCounter(machine, options.costs);
    this.ipis = new VirtualIpis(machine, this.exitCounter, options.costs, options.ipi ?? "exit");
    this.cpu = new GuestCpu(this);
    this.cpuIds = options.cpuIds ?? Array.from({ length: options.cpus }, (_, cpu) => cpu);
  }

  /** The machine CPUs running this VM's vCPUs. */
  readonly cpuIds: number[];

  /** EPTP: write-back structures, walk length, A/D enable; or nCR3 for NPT. */
  get rootPointer(): bigint {
    if (this.name === "npt") return this.root;
    return (
      this.root | 6n | (BigInt(this.options.levels - 1) << 3n) | (this.options.accessedDirty ? 1n << 6n : 0n)
    );
  }

  boot(machine: Machine): void {
    for (const cpu of this.cpuIds) {
      // The EPTP carries the walk length and A/D enable; NPT walks nCR3 with the host's depth. With PML
      // each vCPU gets a log page of its own, its index at 511 (KVM's vmx_vcpu_create and vmcs setup).
      let pml: { address: bigint } | undefined;
      if (this.options.dirtyLog === "pml") {
        const address = this.pmlLogs.get(cpu) ?? this.host.table();
        this.pmlLogs.set(cpu, address);
        pml = { address };
      }
      machine.vmEnter(
        cpu,
        this.name === "ept"
          ? { nested: "ept", root: this.rootPointer, vpid: this.vm.vpid, pml }
          : { nested: "npt", root: this.rootPointer, nestedLevels: this.options.levels, vpid: this.vm.vpid },
      );
    }
  }

  /**
   * A page-modification-log-full exit (SDM 29.3.6, exit reason 62): the log is drained into the dirty
   * log and the access runs again (KVM's handle_pml_full).
   */
  onPmlFull(exit: ExitRecord): ExitAction {
    this.exitCounter.counted("pmlFull");
    this.counters.pml_full_exits++;
    this.drainPml(exit.cpu);
    return "retry";
  }

  /**
   * Moves what `cpu` logged into the dirty log and resets its PML index to 511 (KVM's
   * vmx_flush_pml_buffer, which runs on every VM exit). The valid entries are those above the index:
   * from index + 1 up to 511, or all 512 once the index has wrapped to FFFFH.
   */
  private drainPml(cpu: number): void {
    const address = this.pmlLogs.get(cpu);
    if (address === undefined) return;
    const index = this.machine.pmlIndex(cpu);
    const first = index >= PML_ENTRIES ? 0 : index + 1;
    for (let i = first; i < PML_ENTRIES; i++)
      this.markDirty(this.machine.readPhys64(address + BigInt(i * 8)));
    const drained = PML_ENTRIES - first;
    if (drained === 0) return;
    this.machine.setPmlIndex(cpu, PML_ENTRIES - 1);
    this.counters.pml_drained += drained;
    const cycles = drained * this.options.costs.pmlEntry;
    this.counters.pml_drain_cycles += cycles;
    this.machine.chargeCycles(cycles, CYCLES_TDP);
  }

  /** With nested paging the guest's own #PFs go straight to the guest kernel: no VM exit. */
  onPageFault(_exit: ExitRecord): ExitAction {
    return "deliver";
  }

  private nonLeafBits(): bigint {
    return this.name === "ept" ? EPT_RWX : X86_P | X86_RW | X86_US;
  }

  private leafBits(writable: boolean, size: PageSize): bigint {
    if (this.name === "ept") return (writable ? EPT_RWX : 5n) | EPT_WB | (size === "4K" ? 0n : EPT_LARGE);
    return X86_P | X86_US | (writable ? X86_RW : 0n) | (size === "4K" ? 0n : X86_PS);
  }

  private isPresent(entry: bigint): boolean {
    return this.name === "ept" ? (entry & 7n) !== 0n : (entry & X86_P) !== 0n;
  }

  private isLarge(entry: bigint): boolean {
    return (entry & (this.name === "ept" ? EPT_LARGE : X86_PS)) !== 0n;
  }

  private isWritable(entry: bigint): boolean {
    return (entry & 2n) !== 0n;
  }

  /** The leaf mapping `gpa`: its host address, value and level; or undefined. */
  leafOf(gpa: bigint): { address: bigint; entry: bigint; level: number } | undefined {
    let table = this.root;
    for (let level: number = this.options.levels; level >= 1; level--) {
      const address = table + ((gpa >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
      const entry = this.machine.readPhys64(address);
      if (!this.isPresent(entry)) return undefined;
      if (level === 1 || this.isLarge(entry)) return { address, entry, level };
      table = entry & ADDRESS_MASK;
    }
    return undefined;
  }

  /**
   * The largest page that can map `gpa` (KVM's kvm_mmu_hugepage_adjust): no larger than the host
   * backing page, 4K while the memslot logs dirty pages, and only when the whole page lies in the slot.
   */
  mappingSize(gpa: bigint): PageSize {
    const slot = this.vm.memslotOf(gpa);
    if (!slot || slot.logDirty || this.options.dirtyLog === "wp") return "4K";
    // THP-like backing (the overcommit host): 2M where the region is, or on this touch will be, one 2M
    // host page; 4K once it is split or was backed page by page.
    if (this.vm.largeBacking)
      return this.vm.largeAt(gpa) !== undefined || this.vm.canBackLarge(gpa, this.options.levels + 1)
        ? "2M"
        : "4K";
    let size = this.vm.backingPageSize;
    while (size !== "4K") {
      const bytes = 1n << BigInt(PAGE_SHIFT[size]);
      const base = gpa & ~(bytes - 1n);
      if (base >= slot.base && base + bytes <= slot.base + slot.size) break;
      size = size === "1G" ? "2M" : "4K";
    }
    return size;
  }

  /** Installs the leaf for `gpa` at `size`, creating nested tables above it. */
  private install(gpa: bigint, size: PageSize, writable: boolean, target?: bigint): void {
    const leafLevel = LEVEL_OF[size];
    let table = this.root;
    for (let level: number = this.options.levels; level > leafLevel; level--) {
      const address = table + ((gpa >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
      const entry = this.machine.readPhys64(address);
      if (!this.isPresent(entry)) {
        const child = this.host.table();
        this.counters.tables++;
        this.machine.writePhys64(address, child | this.nonLeafBits());
        table = child;
      } else {
        table = entry & ADDRESS_MASK;
      }
    }
    const bytes = 1n << BigInt(PAGE_SHIFT[size]);
    const base = gpa & ~(bytes - 1n);
    if (size === "2M" && this.vm.largeBacking) {
      // THP's page-table deposit: the table a later split needs is set aside now, so splitting (under
      // reclaim, with no memory free) never has to allocate.
      this.deposited.set(base, this.host.table());
      this.counters.tables++;
    }
    const hpa = target ?? this.vm.hostAddress(base);
    if (size === "2M" && this.vm.largeBacking && this.vm.largeAt(base) !== hpa)
      throw new Error(`0x${base.toString(16)}: a 2M leaf needs the region's 2M backing`);
    const address = table + ((gpa >> BigInt(12 + 9 * (leafLevel - 1))) & 0x1ffn) * 8n;
    this.machine.writePhys64(address, hpa | this.leafBits(writable, size));
    this.counters[size === "4K" ? "pages_4k" : size === "2M" ? "pages_2m" : "pages_1g"]++;
  }

  /**
   * Maps the 4 KiB guest page at `gpa` onto host frame `hpa` (replacing any leaf): how KSM points a
   * sharer at the merged page (read-only), and how a COW break or swap-in installs a private page.
   * The caller invalidates stale translations.
   */
  mapPage(gpa: bigint, hpa: bigint, writable: boolean): void {
    const leaf = this.leafOf(gpa);
    if (leaf && leaf.level !== 1) throw new Error(`0x${gpa.toString(16)} is mapped by a large page`);
    if (leaf) {
      this.machine.writePhys64(leaf.address, hpa | this.leafBits(writable, "4K"));
      return;
    }
    this.install(gpa & ~0xfffn, "4K", writable, hpa);
  }

  /**
   * Splits the 2M leaf mapping `gpa` (KVM's eager huge page split, tdp_mmu_split_huge_page): a new
   * table of 512 4K leaves maps the same host frames with the same rights, memory type and A/D flags,
   * and replaces the leaf. Returns false when `gpa` has no 2M leaf. The caller invalidates.
   */
  splitLarge(gpa: bigint): boolean {
    const leaf = this.leafOf(gpa);
    if (leaf?.level !== 2) return false;
    const region = gpa & ~0x1f_ffffn;
    let table = this.deposited.get(region);
    this.deposited.delete(region);
    if (table === undefined) {
      table = this.host.table();
      this.counters.tables++;
    }
    const largeBit = this.name === "ept" ? EPT_LARGE : X86_PS;
    const base = leaf.entry & ADDRESS_MASK & ~0x1f_ffffn;
    const attributes = leaf.entry & ~ADDRESS_MASK & ~largeBit;
    for (let i = 0n; i < 512n; i++)
      this.machine.writePhys64(table + i * 8n, (base + (i << 12n)) | attributes);
    this.machine.writePhys64(leaf.address, table | this.nonLeafBits());
    this.counters.pages_4k += 512;
    return true;
  }

  /** Clears the leaf of the 4 KiB page at `gpa` (balloon inflation, swap-out); the caller flushes. */
  unmapPage(gpa: bigint): boolean {
    const leaf = this.leafOf(gpa);
    if (!leaf) return false;
    if (leaf.level !== 1) throw new Error(`0x${gpa.toString(16)} is mapped by a large page`);
    this.machine.writePhys64(leaf.address, 0n);
    return true;
  }

  /** The EPT/NPT accessed flag of the leaf for `gpa`, and clears it (page aging, kvm_age_gfn). */
  testAndClearAccessed(gpa: bigint): boolean {
    const leaf = this.leafOf(gpa);
    if (!leaf) return false;
    const accessed = this.name === "ept" ? 1n << 8n : 1n << 5n;
    if ((leaf.entry & accessed) === 0n) return false;
    this.machine.writePhys64(leaf.address, leaf.entry & ~accessed);
    return true;
  }

  /** An EPT violation or #NPF: map the page (the fault path), or emulate MMIO outside every memslot. */
  onNestedFault(exit: ExitRecord): ExitAction {
    const reason =
      exit.reason === "npf" ? "npf" : exit.reason === "eptMisconfig" ? "eptMisconfig" : "eptViolation";
    this.exitCounter.counted(reason);
    this.drainPml(exit.cpu);
    return this.fault(exit.guestPhysical, this.isWriteFault(exit));
  }

  private isWriteFault(exit: ExitRecord): boolean {
    return (exit.qualification & 2n) !== 0n;
  }

  /** KVM's kvm_mmu_page_fault for a TDP fault at `gpa`. */
  fault(gpa: bigint, write: boolean): ExitAction {
    this.counters.pf_taken++;
    const slot = this.vm.memslotOf(gpa);
    if (!slot) {
      // No memslot: MMIO. The access is emulated (a device read returns nothing we model).
      this.counters.pf_mmio++;
      this.machine.chargeCycles(this.options.costs.emulate, CYCLES_EMULATION);
      return "complete";
    }
    const leaf = this.leafOf(gpa);
    if (leaf && write && !this.isWritable(leaf.entry) && !slot.readonly) {
      // Fast page fault: a write-protected page for dirty logging becomes writable again.
      this.machine.writePhys64(leaf.address, leaf.entry | 2n);
      this.markDirty(gpa);
      this.counters.pf_fast++;
      this.machine.chargeCycles(this.options.costs.tdpFault / 4, CYCLES_TDP);
      return "retry";
    }
    if (!leaf) this.install(gpa, this.mappingSize(gpa), !slot.readonly && this.options.dirtyLog !== "wp");
    if (write && this.options.dirtyLog !== "off") this.markDirty(gpa);
    this.counters.pf_fixed++;
    this.machine.chargeCycles(this.options.costs.tdpFault, CYCLES_TDP);
    return "retry";
  }

  private markDirty(gpa: bigint): void {
    const page = gpa & ~0xfffn;
    if (!this.vm.dirty.has(page)) this.counters.dirty_pages++;
    this.vm.dirty.add(page);
  }

  /** Invalidates every vCPU's cached nested translations (kvm_flush_remote_tlbs: INVEPT single-context). */
  flushRemoteTlbs(): void {
    this.counters.remote_tlb_flush++;
    for (const cpu of this.cpuIds) {
      if (this.name === "ept") this.machine.invept(cpu, 1, this.rootPointer);
      else this.machine.tlbControl(cpu, 3);
    }
  }

  /** Every leaf of the nested tables, with its address and the guest-physical base it maps. */
  private *leaves(
    table = this.root,
    level: number = this.options.levels,
    base = 0n,
  ): Generator<{ address: bigint; entry: bigint; gpa: bigint; level: number }> {
    for (let index = 0n; index < 512n; index++) {
      const address = table + index * 8n;
      const entry = this.machine.readPhys64(address);
      if (!this.isPresent(entry)) continue;
      const gpa = base + (index << BigInt(12 + 9 * (level - 1)));
      if (level === 1 || this.isLarge(entry)) yield { address, entry, gpa, level };
      else yield* this.leaves(entry & ADDRESS_MASK, level - 1, gpa);
    }
  }

  /**
   * Collects dirty pages (KVM_GET_DIRTY_LOG with KVM_CLEAR_DIRTY_LOG): with write protection, write-
   * protects every leaf again; with dirty flags, harvests and clears D. With PML the vCPUs are kicked
   * out (each exit drains its log) and only the pages logged get D cleared, so their next write logs
   * them again: no scan. Then flushes remote TLBs.
   */
  harvestDirty(): bigint[] {
    this.counters.dirty_log_harvests++;
    const dirtyBit = this.name === "ept" ? 1n << 9n : 1n << 6n;
    if (this.options.dirtyLog === "pml") {
      for (const cpu of this.pmlLogs.keys()) this.drainPml(cpu);
      const dirty = [...this.vm.dirty];
      this.vm.dirty.clear();
      for (const gpa of dirty) {
        const leaf = this.leafOf(gpa);
        if (leaf && (leaf.entry & dirtyBit) !== 0n)
          this.machine.writePhys64(leaf.address, leaf.entry & ~dirtyBit);
      }
      this.flushRemoteTlbs();
      return dirty;
    }
    const dirty = [...this.vm.dirty];
    this.vm.dirty.clear();
    // Without PML the harvest walks every leaf of the nested tables, whether or not it was written.
    let visited = 0;
    for (const leaf of this.leaves()) {
      visited++;
      if (this.options.dirtyLog === "wp" && this.isWritable(leaf.entry)) {
        this.machine.writePhys64(leaf.address, leaf.entry & ~2n);
      } else if (this.options.dirtyLog === "dbit" && (leaf.entry & dirtyBit) !== 0n) {
        dirty.push(leaf.gpa);
        this.machine.writePhys64(leaf.address, leaf.entry & ~dirtyBit);
      }
    }
    const cycles = visited * this.options.costs.dirtyScanLeaf;
    this.counters.dirty_scan_leaves += visited;
    this.counters.dirty_scan_cycles += cycles;
    this.machine.chargeCycles(cycles, CYCLES_TDP);
    this.flushRemoteTlbs();
    return dirty;
  }

  /** The host frames reachable through the nested tables (for isolation checks). */
  mappedHostFrames(): bigint[] {
    const frames: bigint[] = [];
    for (const leaf of this.leaves())
      frames.push(leaf.entry & ADDRESS_MASK & ~((1n << BigInt(12 + 9 * (leaf.level - 1))) - 1n));
    return frames;
  }

  get periodCycles(): number {
    return this.options.dirtyLog === "off" ? 0 : this.options.dirtyLogIntervalCycles;
  }

  /** The VMM's dirty-log harvest, every periodCycles of simulated time. */
  periodic(): void {
    this.harvestDirty();
  }

  stats(): Record<string, number> {
    // Each dirty log's own counters, only when it is the one on (they would only ever be 0).
    const { dirty_scan_leaves, dirty_scan_cycles, ...withPml } = this.counters;
    if (this.options.dirtyLog === "pml") return withPml;
    const { pml_full_exits: _exits, pml_drained: _drained, pml_drain_cycles: _cycles, ...counters } = withPml;
    if (this.options.dirtyLog !== "off") return { ...counters, dirty_scan_leaves, dirty_scan_cycles };
    return counters;
  }

  exits(): Record<string, number> {
    return { ...this.exitCounter.byReason };
  }

  /** The guest's store to its own memory goes through the nested tables like any other access. */
  guestStore(gpa: bigint, value: bigint): void {
    if (!this.vm.memslotOf(gpa)) {
      // A store outside guest RAM is an MMIO write: it exits, is emulated, and changes no memory.
      this.exitCounter.take(this.name === "ept" ? "eptViolation" : "npf", this.cpuIds[0]);
      this.fault(gpa, true);
      return;
    }
    const leaf = this.leafOf(gpa);
    if (!leaf || !this.isWritable(leaf.entry)) {
      // The store takes an EPT violation (#NPF) first: a VM exit and the fault path.
      this.exitCounter.take(this.name === "ept" ? "eptViolation" : "npf", this.cpuIds[0]);
      this.fault(gpa, true);
    } else if (this.options.dirtyLog === "dbit" || this.options.dirtyLog === "pml") {
      // The hypervisor's own store sets no EPT D flag: it marks the page itself (mark_page_dirty).
      this.markDirty(gpa);
    }
    this.machine.writePhys64(this.vm.hostAddress(gpa), value);
  }

  /** With nested paging the guest's CR3 loads and invalidations run on the hardware, untrapped. */
  guestLoadCr3(cpu: number, value: bigint): void {
    this.machine.movCr3(cpu, value);
  }

  guestInvlpg(cpu: number, la: bigint): void {
    this.machine.invlpg(cpu, la);
  }

  guestInvpcid(cpu: number, type: number, pcid: number, la: bigint): void {
    this.machine.invpcid(cpu, type, pcid, la);
  }

  guestLoad(gpa: bigint): bigint {
    // Outside guest RAM nothing answers: an MMIO read of nothing reads as zero here.
    if (!this.vm.memslotOf(gpa)) return 0n;
    return this.machine.readPhys64(this.vm.hostAddress(gpa));
  }

  guestLoadRange(gpa: bigint, count: number): bigint[] {
    if (!this.vm.memslotOf(gpa)) return new Array<bigint>(count).fill(0n);
    return readRange(this.machine, this.vm.hostAddress(gpa), count);
  }

  /** The guest's shootdown IPIs go through KVM's local APIC; the targets flush on their own, unseen. */
  guestFlushOthers(
    from: number,
    targets: readonly number[],
    flush: TlbFlush,
    handler: (cpu: number) => void,
  ): void {
    this.ipis.shootdown(from, targets, flush, handler);
  }

  shootdownStats(): Record<string, number> {
    return { ...this.ipis.counters };
  }
}

/** EPT or NPT in the technique table: the TDP MMU in the given format. */
function tdpTechnique(format: "ept" | "npt"): TechniqueModule {
  return {
    virtual: true,
    nestedTables: true,
    create: ({ machine, vm, memory, cpuIds }, { hypervisor, hostLevels }) =>
      new TdpMmu(machine, vm, memory, {
        format,
        levels: hostLevels,
        accessedDirty: format === "npt" || hypervisor.eptAccessedDirty,
        costs: hypervisor.costs,
        dirtyLog: hypervisor.dirtyLog,
        dirtyLogIntervalCycles: hypervisor.dirtyLogIntervalCycles,
        cpus: cpuIds.length,
        cpuIds: [...cpuIds],
        ipi: hypervisor.ipi,
      }),
  };
}

export const eptTechnique = tdpTechnique("ept");
export const nptTechnique = tdpTechnique("npt");
