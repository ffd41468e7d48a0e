// Hand-built two-dimensional page tables for hardware tests: guest x86 tables in guest-physical memory,
// and EPT or NPT tables mapping guest-physical pages to host-physical ones at a fixed offset.
import { RefMachine } from "../../reference/machine.js";
import { defaultConfig } from "../../src/config/config.js";
import { Machine, type NestedMode, type VmEntry } from "../../src/core/machine.js";
import type { AccessResult, MachineConfig, PageSize, Regs } from "../../src/core/types.js";

/** The operations rule tests need, on the core or the reference model. */
export interface Target {
  writePhys64(pa: bigint, value: bigint): void;
  readPhys64(pa: bigint): bigint;
  setRegs(cpu: number, regs: Partial<Regs>): void;
  vmEnter(cpu: number, entry: VmEntry): void;
  translate(cpu: number, la: bigint, kind: number): AccessResult;
}

/** Both implementations, by name, for rules that must hold in each. */
export const IMPLEMENTATIONS: [string, (config: MachineConfig) => Target][] = [
  ["core", (config) => new Machine(config)],
  [
    "reference",
    (config) => {
      const ref = new RefMachine(config);
      return {
        writePhys64: (pa, value) => ref.writePhys64(pa, value),
        readPhys64: (pa) => ref.readPhys64(pa),
        setRegs: (cpu, regs) => ref.setRegs(cpu, regs),
        vmEnter: (cpu, entry) => ref.vmEnter(cpu, entry),
        translate: (cpu, la, kind) => ref.access(cpu, la, kind),
      };
    },
  ],
];

export const HOST_OFFSET = 0x10_0000_0000n;
export const SIZE: Record<PageSize, bigint> = { "4K": 0x1000n, "2M": 0x20_0000n, "1G": 0x4000_0000n };
const LEVEL: Record<PageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };

export const EPT_RWX = 7n;
export const EPT_WB = 6n << 3n;
export const X86_USER_RW = 7n;

/** A machine with every cache off: reference counts are then the bare (n+1)(m+1)-1. */
export function bareConfig(): MachineConfig {
  const machine = defaultConfig().machine;
  machine.tlb = { l1d: null, l1i: null, l2: null };
  machine.psc = { latency: 0, pml5: null, pml4: null, pdpte: null, pde: null };
  machine.nestedTlb = null;
  machine.nestedPsc = null;
  return machine;
}

export class TwoDimensional {
  readonly machine: Machine;
  private nextHostTable = 0x1000_0000n;
  private nextGuestTable = 0x100_0000n;
  readonly nestedRoot: bigint;
  readonly guestRoot: bigint;

  constructor(
    readonly nested: Exclude<NestedMode, "none">,
    readonly nestedLevels: 4 | 5 = 4,
    readonly guestLevels: 4 | 5 = 4,
    config: MachineConfig = bareConfig(),
    readonly options: { accessedDirty?: boolean; vpid?: number } = {},
  ) {
    this.machine = new Machine(config);
    this.nestedRoot = this.hostTable();
    this.guestRoot = this.guestTable();
    const cr4 = 0x20n | (guestLevels === 5 ? 1n << 12n : 0n);
    this.machine.setRegs(0, { cr0: 0x8001_0001n, cr3: this.guestRoot, cr4, efer: 0xd00n, cpl: 3 });
    this.enter();
  }

  /** EPTP with write-back structures, the walk length and optionally A/D; or nCR3. */
  get rootValue(): bigint {
    if (this.nested === "npt") return this.nestedRoot;
    return (
      this.nestedRoot |
      6n |
      (BigInt(this.nestedLevels - 1) << 3n) |
      (this.options.accessedDirty ? 1n << 6n : 0n)
    );
  }

  enter(vpid = this.options.vpid ?? 1): void {
    this.machine.vmEnter(
      0,
      this.nested === "ept"
        ? { nested: "ept", root: this.rootValue, vpid }
        : { nested: "npt", root: this.rootValue, nestedLevels: this.nestedLevels, vpid },
    );
  }

  hostTable(): bigint {
    const address = this.nextHostTable;
    this.nextHostTable += 0x1000n;
    return address;
  }

  /** A guest page-table page, mapped 4K in the nested dimension (read/write). */
  guestTable(): bigint {
    const address = this.nextGuestTable;
    this.nextGuestTable += 0x1000n;
    return address;
  }

  /** Nested entry bits granting `rights` (bit 0 R, 1 W, 2 X) for a leaf of `size`. */
  nestedLeafBits(rights: bigint, size: PageSize): bigint {
    if (this.nested === "ept") return rights | EPT_WB | (size === "4K" ? 0n : 1n << 7n);
    // NPT: present, RW from the W right, user, NX without X.
    let bits = 1n | 4n | (rights & 2n);
    if ((rights & 4n) === 0n) bits |= 1n << 63n;
    if (size !== "4K") bits |= 1n << 7n;
    return bits;
  }

  private nestedNonLeaf(): bigint {
    return this.nested === "ept" ? EPT_RWX : X86_USER_RW;
  }

  /** Maps guest-physical `gpa`'s page of `size` to gpa + HOST_OFFSET; returns the leaf entry's address. */
  mapNested(gpa: bigint, size: PageSize = "4K", rights = 7n, leafBits?: bigint): bigint {
    let table = this.nestedRoot;
    for (let level = this.nestedLevels; level > LEVEL[size]; level--) {
      const address = table + ((gpa >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
      let entry = this.machine.readPhys64(address);
      if (entry === 0n) {
        entry = this.hostTable() | this.nestedNonLeaf();
        this.machine.writePhys64(address, entry);
      }
      table = entry & 0x000f_ffff_ffff_f000n;
    }
    const leaf = table + ((gpa >> BigInt(12 + 9 * (LEVEL[size] - 1))) & 0x1ffn) * 8n;
    const frame = (gpa & ~(SIZE[size] - 1n)) + HOST_OFFSET;
    this.machine.writePhys64(leaf, leafBits ?? frame | this.nestedLeafBits(rights, size));
    return leaf;
  }

  writeGuest(gpa: bigint, value: bigint): void {
    this.machine.writePhys64(gpa + HOST_OFFSET, value);
  }

  readGuest(gpa: bigint): bigint {
    return this.machine.readPhys64(gpa + HOST_OFFSET);
  }

  /**
   * Maps guest-virtual `la` to guest-physical `gpa` with a guest page of `size`, building guest tables
   * (each nested-mapped 4K read/write unless `tableNestedSize` says otherwise). Returns the leaf's GPA.
   */
  mapGuest(
    la: bigint,
    gpa: bigint,
    size: PageSize = "4K",
    leafFlags = 0x7n,
    tableNestedSize: PageSize = "4K",
  ): bigint {
    let table = this.guestRoot;
    this.ensureNested(table, tableNestedSize);
    for (let level = this.guestLevels; level > LEVEL[size]; level--) {
      const address = table + ((la >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
      let entry = this.readGuest(address);
      if (entry === 0n) {
        const child = this.guestTable();
        this.ensureNested(child, tableNestedSize);
        entry = child | 0x7n;
        this.writeGuest(address, entry);
      }
      table = entry & 0x000f_ffff_ffff_f000n;
    }
    const leaf = table + ((la >> BigInt(12 + 9 * (LEVEL[size] - 1))) & 0x1ffn) * 8n;
    this.writeGuest(leaf, (gpa & ~(SIZE[size] - 1n)) | leafFlags | (size === "4K" ? 0n : 0x80n));
    return leaf;
  }

  private readonly nestedMapped = new Set<bigint>();

  private ensureNested(gpa: bigint, size: PageSize): void {
    const page = gpa & ~(SIZE[size] - 1n);
    if (this.nestedMapped.has(page)) return;
    this.nestedMapped.add(page);
    this.mapNested(page, size);
  }
}
