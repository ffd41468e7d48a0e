// The one narrow interface between the guest kernel and the CPU it runs on. The guest OS model
// changes translation only through these operations, so each virtualization technique can meet it
// exactly where real hardware would: natively the stores land; under shadow paging they trap; under
// paravirtual paging they are hypercalls.
import type { Machine } from "../core/machine.js";

export interface PagingCpu {
  /**
   * Store of one 8-byte paging-structure entry at (guest-)physical address `pa`, in a table of paging
   * level `level` (5..1; a paravirtual kernel tells the hypervisor, as Xen's pinned table types do).
   */
  writeEntry(pa: bigint, value: bigint, level: number): void;
  readEntry(pa: bigint): bigint;
  /** MOV to CR3 (bit 63 is the no-flush hint when PCIDs are on). */
  loadCr3(cpu: number, value: bigint): void;
  invlpg(cpu: number, la: bigint): void;
  invpcid(cpu: number, type: number, pcid: number, la: bigint): void;
  /** Cycles the kernel spent, charged to the machine's clock. */
  charge(cycles: number): void;
  /** The page-table frame is free again: the hardware may drop its backing (it reads as zeros). */
  releaseTable(pa: bigint): void;
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
}

/** Handler-cycle categories (the core keeps 8). */
export const HANDLER_GUEST_KERNEL = 0;
