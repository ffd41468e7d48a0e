// Software that builds IOMMU structures in host physical memory, the way Linux's intel-iommu and
// amd_iommu drivers do: VT-d root and context tables (legacy and scalable mode, with PASID directories
// and tables), the AMD-Vi device table, and I/O page tables in the VT-d second-level, VT-d first-level
// (x86) and AMD-Vi formats. Everything goes through the machine's physical memory.
import { type Machine, MemvirtError } from "../core/machine.js";
import { PAGE_SHIFT, type PageSize } from "../core/types.js";

/** Where table frames come from: zeroed 4 KiB host frames (and contiguous 2 MiB ones). */
export interface HostFrames {
  alloc(size: PageSize): bigint;
  release(base: bigint, size: PageSize): void;
}

export type IoTableFormat = "vtd-sl" | "vtd-fl" | "amdvi";

export interface Permissions {
  read: boolean;
  write: boolean;
}

const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;

/** Sparse memory reads zeros from a released frame, so a released frame comes back zeroed. */
function releaseFrames(machine: Machine, frames: HostFrames, base: bigint, size: PageSize): void {
  for (let offset = 0n; offset < 1n << BigInt(PAGE_SHIFT[size]); offset += 4096n)
    machine.releaseFrame((base + offset) >> 12n);
  frames.release(base, size);
}

/** An I/O page table of one format and depth. */
export class IoPageTable {
  readonly root: bigint;
  /** Table frames in use (for accounting and release). */
  readonly tables: bigint[] = [];

  constructor(
    readonly machine: Machine,
    readonly frames: HostFrames,
    readonly format: IoTableFormat,
    readonly levels: number,
  ) {
    this.root = this.newTable();
  }

  private newTable(): bigint {
    const frame = this.frames.alloc("4K");
    this.tables.push(frame);
    return frame;
  }

  /** A non-leaf entry at a table of level `level` pointing to `next`. */
  private tableEntry(next: bigint, level: number): bigint {
    if (this.format === "vtd-sl") return next | 3n;
    // First-level entries are user, writable and present: rights are decided by the leaf.
    if (this.format === "vtd-fl") return next | 7n;
    return next | 1n | (BigInt(level - 1) << 9n) | (1n << 61n) | (1n << 62n);
  }

  private leafEntry(pa: bigint, size: PageSize, perms: Permissions): bigint {
    const large = size !== "4K";
    if (this.format === "vtd-sl")
      return pa | (perms.read ? 1n : 0n) | (perms.write ? 2n : 0n) | (large ? 0x80n : 0n);
    if (this.format === "vtd-fl") {
      // A first-level entry is readable when present; a no-access mapping is simply not present.
      if (!perms.read && !perms.write) return 0n;
      return pa | 5n | (perms.write ? 2n : 0n) | (large ? 0x80n : 0n);
    }
    return pa | 1n | (perms.read ? 1n << 61n : 0n) | (perms.write ? 1n << 62n : 0n);
  }

  private entryAddress(table: bigint, iova: bigint, level: number): bigint {
    return table + ((iova >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
  }

  private present(entry: bigint): boolean {
    return this.format === "vtd-sl" ? (entry & 3n) !== 0n : (entry & 1n) !== 0n;
  }

  /** Maps the `size` page at `iova` to `pa`, allocating intermediate tables. */
  map(iova: bigint, pa: bigint, size: PageSize, perms: Permissions): void {
    const leafLevel = size === "4K" ? 1 : size === "2M" ? 2 : 3;
    const pageMask = (1n << BigInt(PAGE_SHIFT[size])) - 1n;
    if ((iova & pageMask) !== 0n || (pa & pageMask) !== 0n)
      throw new MemvirtError(
        `IOMMU map: 0x${iova.toString(16)} -> 0x${pa.toString(16)} not ${size}-aligned`,
        1,
      );
    if (iova >> BigInt(12 + 9 * this.levels) !== 0n)
      throw new MemvirtError(`IOMMU map: 0x${iova.toString(16)} beyond a ${this.levels}-level table`, 1);
    let table = this.root;
    for (let level = this.levels; level > leafLevel; level--) {
      const at = this.entryAddress(table, iova, level);
      const entry = this.machine.readPhys64(at);
      if (this.present(entry) && (this.format === "amdvi" || (entry & 0x80n) === 0n)) {
        table = entry & ADDRESS_MASK;
        continue;
      }
      const next = this.newTable();
      this.machine.writePhys64(at, this.tableEntry(next, level));
      table = next;
    }
    const leaf = this.leafEntry(pa, size, perms);
    // AMD-Vi marks a large leaf by Next Level 0 at its level: nothing more to encode.
    this.machine.writePhys64(this.entryAddress(table, iova, leafLevel), leaf);
  }

  /** Clears the leaf mapping `iova`; returns its size, or undefined when nothing was mapped. */
  unmap(iova: bigint): PageSize | undefined {
    let table = this.root;
    for (let level = this.levels; level >= 1; level--) {
      const at = this.entryAddress(table, iova, level);
      const entry = this.machine.readPhys64(at);
      if (!this.present(entry)) return undefined;
      const leaf =
        level === 1 || (this.format === "amdvi" ? ((entry >> 9n) & 7n) === 0n : (entry & 0x80n) !== 0n);
      if (leaf) {
        this.machine.writePhys64(at, 0n);
        return level === 1 ? "4K" : level === 2 ? "2M" : "1G";
      }
      table = entry & ADDRESS_MASK;
    }
    return undefined;
  }

  /** Frees every table frame (after the IOMMU can no longer reach them). */
  release(): void {
    for (const frame of this.tables) releaseFrames(this.machine, this.frames, frame, "4K");
    this.tables.length = 0;
  }
}

// --- VT-d -----------------------------------------------------------------------------------------

export interface VtdContext {
  domain: number;
  /** Translation type: 0 translate, 1 translate with device TLB, 2 pass-through. */
  tt?: number;
  /** AW: 1 = 3 levels, 2 = 4 levels, 3 = 5 levels. */
  aw?: number;
  /** Second-level table root. */
  root?: bigint;
  faultProcessingDisable?: boolean;
}

export interface VtdPasidEntry {
  domain: number;
  /** 1 first-level, 2 second-level, 3 nested, 4 pass-through. */
  pgtt: number;
  aw?: number;
  secondLevelRoot?: bigint;
  firstLevelRoot?: bigint;
  firstLevels?: 4 | 5;
  faultProcessingDisable?: boolean;
}

/** VT-d root table and context tables, legacy or scalable mode. */
export class VtdRootTable {
  readonly root: bigint;
  private readonly contextTables = new Map<number, bigint>();
  private readonly pasidDirectories = new Map<number, bigint>();
  private readonly pasidTables = new Map<string, bigint>();

  constructor(
    readonly machine: Machine,
    readonly frames: HostFrames,
    readonly scalable: boolean,
  ) {
    this.root = frames.alloc("4K");
  }

  /** The value for RTADDR. */
  get rtaddr(): bigint {
    return this.root | (this.scalable ? 1n << 10n : 0n);
  }

  /** The context table serving `sid` (a scalable root entry has two, for devfn < 128 and >= 128). */
  private contextTable(sid: number): bigint {
    const bus = sid >> 8;
    const upper = this.scalable && (sid & 0xff) >= 128;
    const key = bus * 2 + (upper ? 1 : 0);
    let table = this.contextTables.get(key);
    if (table === undefined) {
      table = this.frames.alloc("4K");
      this.contextTables.set(key, table);
      const at = this.root + BigInt(bus) * 16n + (upper ? 8n : 0n);
      this.machine.writePhys64(at, table | 1n);
    }
    return table;
  }

  /** Address of `sid`'s context entry (16 bytes legacy, 32 bytes scalable). */
  contextEntryAddress(sid: number): bigint {
    const devfn = sid & 0xff;
    return this.contextTable(sid) + (this.scalable ? BigInt(devfn & 0x7f) * 32n : BigInt(devfn) * 16n);
  }

  /** Legacy mode: points `sid` at a second-level table (or pass-through) in a domain. */
  setContext(sid: number, context: VtdContext): void {
    if (this.scalable) throw new MemvirtError("setContext is for legacy mode; use setPasidEntry", 1);
    const at = this.contextEntryAddress(sid);
    const lo =
      1n |
      (context.faultProcessingDisable ? 2n : 0n) |
      (BigInt(context.tt ?? 0) << 2n) |
      ((context.root ?? 0n) & ADDRESS_MASK);
    const hi = BigInt(context.aw ?? 2) | (BigInt(context.domain) << 8n);
    this.machine.writePhys64(at + 8n, hi);
    this.machine.writePhys64(at, lo);
  }

  clearContext(sid: number): void {
    const at = this.contextEntryAddress(sid);
    this.machine.writePhys64(at, 0n);
    this.machine.writePhys64(at + 8n, 0n);
    if (this.scalable) {
      this.machine.writePhys64(at + 16n, 0n);
      this.machine.writePhys64(at + 24n, 0n);
    }
  }

  /**
   * Scalable mode: the context entry of `sid` (PASIDs enabled, a 2^(7+pdts)-entry PASID directory,
   * `ridPasid` for requests without a PASID, device TLB when `deviceTlb`) and one PASID-table entry.
   */
  setPasidEntry(
    sid: number,
    pasid: number,
    entry: VtdPasidEntry,
    options: { ridPasid?: number; deviceTlb?: boolean } = {},
  ): void {
    if (!this.scalable) throw new MemvirtError("setPasidEntry needs scalable mode", 1);
    let directory = this.pasidDirectories.get(sid);
    const contextAt = this.contextEntryAddress(sid);
    if (directory === undefined) {
      // 2^(7 + 7) = 16384 directory entries (PDTS = 7) fill 128 KiB; one 4 KiB frame holds 512, so the
      // directory covers PASIDs below 512 * 64 with PDTS = 2 (2^9 entries).
      directory = this.frames.alloc("4K");
      this.pasidDirectories.set(sid, directory);
    }
    const pdts = 2n;
    const q0 = 1n | 8n | (options.deviceTlb ? 4n : 0n) | (pdts << 9n) | directory;
    this.machine.writePhys64(contextAt + 8n, BigInt(options.ridPasid ?? 0));
    this.machine.writePhys64(contextAt, q0);
    const directoryIndex = pasid >> 6;
    if (directoryIndex >= 512) throw new MemvirtError(`PASID ${pasid} beyond the PASID directory`, 1);
    const key = `${sid}:${directoryIndex}`;
    let table = this.pasidTables.get(key);
    if (table === undefined) {
      table = this.frames.alloc("4K");
      this.pasidTables.set(key, table);
      this.machine.writePhys64(directory + BigInt(directoryIndex) * 8n, table | 1n);
    }
    const at = table + BigInt(pasid & 0x3f) * 64n;
    const q0e =
      1n |
      (entry.faultProcessingDisable ? 2n : 0n) |
      (BigInt(entry.aw ?? 2) << 2n) |
      (BigInt(entry.pgtt) << 6n) |
      ((entry.secondLevelRoot ?? 0n) & ADDRESS_MASK);
    const q2 =
      ((entry.firstLevels ?? 4) === 5 ? 1n << 2n : 0n) | ((entry.firstLevelRoot ?? 0n) & ADDRESS_MASK);
    this.machine.writePhys64(at + 8n, BigInt(entry.domain));
    this.machine.writePhys64(at + 16n, q2);
    this.machine.writePhys64(at, q0e);
  }
}

// --- AMD-Vi -----------------------------------------------------------------------------------------

export interface AmdDte {
  valid?: boolean;
  translationValid?: boolean;
  /** 0 = untranslated with IR/IW, 1..6 = page-table levels. */
  mode: number;
  root?: bigint;
  domain: number;
  read?: boolean;
  write?: boolean;
  /** I: ATS translated requests allowed. */
  ats?: boolean;
}

/** The AMD-Vi device table: 65,536 entries of 32 bytes in one contiguous 2 MiB host region. */
export class AmdDeviceTable {
  readonly base: bigint;

  constructor(
    readonly machine: Machine,
    readonly frames: HostFrames,
  ) {
    this.base = frames.alloc("2M");
  }

  setDte(sid: number, dte: AmdDte): void {
    const at = this.base + BigInt(sid) * 32n;
    const q0 =
      (dte.valid === false ? 0n : 1n) |
      (dte.translationValid === false ? 0n : 2n) |
      (BigInt(dte.mode) << 9n) |
      ((dte.root ?? 0n) & ADDRESS_MASK) |
      (dte.read === false ? 0n : 1n << 61n) |
      (dte.write === false ? 0n : 1n << 62n);
    this.machine.writePhys64(at + 8n, BigInt(dte.domain) | (dte.ats ? 1n << 32n : 0n));
    this.machine.writePhys64(at, q0);
  }

  clearDte(sid: number): void {
    const at = this.base + BigInt(sid) * 32n;
    this.machine.writePhys64(at, 0n);
    this.machine.writePhys64(at + 8n, 0n);
  }
}

/** "bb:dd.f" to a requester id (bus << 8 | device << 3 | function). */
export function parseBdf(text: string): number | undefined {
  const match = /^([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/i.exec(text.trim());
  if (!match) return undefined;
  const bus = Number.parseInt(match[1], 16);
  const device = Number.parseInt(match[2], 16);
  if (device > 31) return undefined;
  return (bus << 8) | (device << 3) | Number(match[3]);
}

export function formatBdf(sid: number): string {
  const hex = (n: number, w: number) => n.toString(16).padStart(w, "0");
  return `${hex(sid >> 8, 2)}:${hex((sid >> 3) & 0x1f, 2)}.${sid & 7}`;
}
