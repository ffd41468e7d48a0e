// The one narrow interface between the guest kernel and the CPU it runs on. The guest OS model
// changes translation only through these operations, so each virtualization technique can meet it
// exactly where real hardware would: natively the stores land; under shadow paging they trap; under
// paravirtual paging they are hypercalls. The operations past the instructions are Linux's paravirt
// MMU hooks (pv_ops.mmu: lazy MMU mode, flush_tlb_multi, the pin and unpin of dup_mmap, activate_mm
// and exit_mmap): natively and under hardware-assisted virtualization they are the plain instructions
// or nothing, and a paravirtual hypervisor turns them into its batched hypercalls.
import type { Machine } from "../core/machine.js";

/** A TLB flush the guest kernel asks other CPUs to make for one address space (flush_tlb_info). */
export interface TlbFlush {
  /** The address space's PCID (0 without PCIDs). */
  pcid: number;
  /** Page bases to invalidate one by one, or undefined for every entry of the address space. */
  pages?: readonly bigint[];
  /** The guest's own cycles per target: the IPI's delivery and the handler's entry and return. */
  ipiCycles: number;
}

export interface PagingCpu {
  /**
   * Store of one 8-byte paging-structure entry at (guest-)physical address `pa`, in a table of paging
   * level `level` (5..1; a paravirtual kernel tells the hypervisor, as Xen's pinned table types do).
   */
  writeEntry(pa: bigint, value: bigint, level: number): void;
  readEntry(pa: bigint): bigint;
  /** Loads of `count` consecutive entries from `pa`, all in one page table (a scan of its slots). */
  readEntries(pa: bigint, count: number): bigint[];
  /** MOV to CR3 (bit 63 is the no-flush hint when PCIDs are on). */
  loadCr3(cpu: number, value: bigint): void;
  invlpg(cpu: number, la: bigint): void;
  invpcid(cpu: number, type: number, pcid: number, la: bigint): void;
  /** Cycles the kernel spent, charged to the machine's clock. */
  charge(cycles: number): void;
  /** The page-table frame is free again: the hardware may drop its backing (it reads as zeros). */
  releaseTable(pa: bigint): void;
  /**
   * Lazy MMU mode (arch_enter/leave_lazy_mmu_mode) around a run of entry updates, as zapping, copying
   * and changing protections do: updates may be batched until it ends. Reads see every update made.
   */
  lazyMmu(on: boolean): void;
  /**
   * flush_tlb_multi: `from` asks `targets` (other CPUs running the address space) to flush, each by
   * running `handler` on itself, which is what the IPI's handler does with this CPU interface.
   */
  flushTlbOthers(
    from: number,
    targets: readonly number[],
    flush: TlbFlush,
    handler: (cpu: number) => void,
  ): void;
  /** The address space at `root` is about to be used (fork's dup_mmap, a first activate_mm). */
  pinTables(root: bigint): void;
  /** The address space at `root` is being torn down (exit_mmap, before its tables are cleared). */
  unpinTables(root: bigint): void;
}

/** Bare metal: every operation is the machine instruction itself. */
export class NativeCpu implements PagingCpu {
  constructor(readonly machine: Machine) {}

  writeEntry(pa: bigint, value: bigint): void {
    this.machine.writePhys64(pa, value);
  }

  readEntry(pa: bigint): bigint {
    return this.machine.readPhys64(pa);
  }

  readEntries(pa: bigint, count: number): bigint[] {
    return readRange(this.machine, pa, count);
  }

  loadCr3(cpu: number, value: bigint): void {
    this.machine.movCr3(cpu, value);
  }

  invlpg(cpu: number, la: bigint): void {
    this.machine.invlpg(cpu, la);
  }

  invpcid(cpu: number, type: number, pcid: number, la: bigint): void {
    if (!this.machine.invpcid(cpu, type, pcid, la)) throw new Error(`INVPCID type ${type} #GP`);
  }

  charge(cycles: number): void {
    this.machine.chargeCycles(cycles, HANDLER_GUEST_KERNEL);
  }

  releaseTable(pa: bigint): void {
    this.machine.releaseFrame(pa >> 12n);
  }

  lazyMmu(_on: boolean): void {}

  /** An IPI to each target (the ICR write, the interrupt and the handler's return), then its handler. */
  flushTlbOthers(
    _from: number,
    targets: readonly number[],
    flush: TlbFlush,
    handler: (cpu: number) => void,
  ): void {
    this.charge(flush.ipiCycles * targets.length);
    for (const target of targets) handler(target);
  }

  pinTables(_root: bigint): void {}

  unpinTables(_root: bigint): void {}
}

/** Handler-cycle categories (the core keeps 8). */
export const HANDLER_GUEST_KERNEL = 0;

/** `count` consecutive 8-byte words of physical memory from `pa`. */
export function readRange(machine: Machine, pa: bigint, count: number): bigint[] {
  const words: bigint[] = new Array(count);
  for (let i = 0; i < count; i++) words[i] = machine.readPhys64(pa + BigInt(i * 8));
  return words;
}
