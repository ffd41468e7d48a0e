// One access explained: the core translates it with every page-table reference recorded
// (Machine.traceTranslate), and each reference is placed in the walk's grid. A native walk is one row of
// four or five entries; a two-dimensional walk (EPT, NPT) is the (n+1) x (m+1) - 1 grid: for each guest
// level, the nested walk of that guest table's guest-physical address and then the guest entry, and
// last the nested walk of the final guest-physical address. Entries the walk did not read are marked
// with what stood in for them: a paging-structure cache, the nested TLB or nested paging-structure
// cache, a TLB hit, or a fault that ended the walk first.
//
// The grid's addresses come from the tables in memory, read before the access (the path the walk
// would take); the references come from the core, in the order it made them. A reference is matched
// to the next cell of the path with its address: whatever the walk skipped lies between.

import type { Machine, TracedReference } from "./machine.js";
import { type AccessResult, FaultType } from "./types.js";

/** What served a cell: a level of the cache model (the entry was read), or what made reading it needless. */
export type CellSource =
  | TracedReference["servedBy"]
  | "tlb"
  | "psc"
  | "nested-tlb"
  | "nested-psc"
  | "not-reached";

export interface EntryBit {
  name: string;
  /** Bit range, high:low (or one bit). */
  bits: string;
  value: number;
}

export interface WalkCell {
  /** "guest": an entry of the guest's (or, natively, the only) tables; "nested": an EPT/NPT entry. */
  dimension: "guest" | "nested";
  /** The guest level this row walks (5 to 1), or 0 for the final guest-physical address. */
  guestLevel: number;
  /** For nested cells, the EPT/NPT level (5 to 1); 0 for guest cells. */
  nestedLevel: number;
  /** Host-physical address of the entry. */
  address: bigint;
  /** Guest cells under nesting: the entry's guest-physical address. Nested cells: the address translated. */
  guestPhysical?: bigint;
  /** The entry as the walk read it (or, for a cell not read, as memory held it). */
  value: bigint;
  bits: EntryBit[];
  source: CellSource;
  /** Position among the access's references (1 = first), for cells that were read. */
  order?: number;
  cycles: number;
  /** The A/D update this walk made to the entry, if any. */
  update?: { order: number; value: bigint; cycles: number; servedBy: TracedReference["servedBy"] };
}

export interface FaultBit {
  bit: number;
  name: string;
  set: boolean;
  meaning: string;
}

export interface WalkExplanation {
  cpu: number;
  la: bigint;
  kind: number;
  /** "native" covers every one-dimensional walk: bare metal, shadow tables, PV direct paging. */
  dimensions: "native" | "ept" | "npt";
  guestLevels: number;
  nestedLevels: number;
  result: AccessResult;
  /** The TLB level that answered, when no walk was needed. */
  tlbHit?: "l1d" | "l1i" | "l2";
  /** Cells in grid order: row by row (guest level top to bottom, then the final address). */
  cells: WalkCell[];
  /** Every reference in the order the core made it, with the cell it read or updated. */
  references: (TracedReference & { cell: number })[];
  /** Counters that moved: TLB, paging-structure caches, nested TLB. */
  caches: { name: string; hits: number; misses: number }[];
  fault?: { name: string; code: number; gpa?: bigint; bits: FaultBit[] };
}

const ADDRESS = 0x000f_ffff_ffff_f000n;
const shiftOf = (level: number) => 12 + 9 * (level - 1);
const indexOf = (address: bigint, level: number) => (address >> BigInt(shiftOf(level))) & 0x1ffn;

/** One entry of a table path, as the tables in memory hold it. */
interface PathEntry {
  level: number;
  address: bigint;
  value: bigint;
}

/**
 * The entries a radix walk of `address` from the table at `root` reads, down to a leaf or an entry
 * that is not present; `translated` is where the leaf maps `address`. Reads memory only.
 */
function tablePath(
  read: (hpa: bigint) => bigint,
  root: bigint,
  levels: number,
  address: bigint,
  format: "x86" | "ept",
): { entries: PathEntry[]; translated?: bigint } {
  const entries: PathEntry[] = [];
  let table = root & ADDRESS;
  for (let level = levels; level >= 1; level--) {
    const entryAddress = table | (indexOf(address, level) << 3n);
    const value = read(entryAddress);
    entries.push({ level, address: entryAddress, value });
    const present = format === "ept" ? (value & 7n) !== 0n : (value & 1n) !== 0n;
    if (!present) return { entries };
    if (level === 1 || (level <= 3 && (value & 0x80n) !== 0n)) {
      const mask = (1n << BigInt(shiftOf(level))) - 1n;
      return { entries, translated: (value & ADDRESS & ~mask) | (address & mask) };
    }
    table = value & ADDRESS;
  }
  return { entries };
}

const bit = (value: bigint, n: number) => Number((value >> BigInt(n)) & 1n);
const field = (value: bigint, high: number, low: number) =>
  Number((value >> BigInt(low)) & ((1n << BigInt(high - low + 1)) - 1n));

/** An x86-64 paging entry (SDM Tables 4-15 to 4-20; NPT uses the same format). */
export function decodeX86Entry(value: bigint, level: number): EntryBit[] {
  const large = level > 1 && bit(value, 7) === 1;
  const bits: EntryBit[] = [
    { name: "P", bits: "0", value: bit(value, 0) },
    { name: "R/W", bits: "1", value: bit(value, 1) },
    { name: "U/S", bits: "2", value: bit(value, 2) },
    { name: "PWT", bits: "3", value: bit(value, 3) },
    { name: "PCD", bits: "4", value: bit(value, 4) },
    { name: "A", bits: "5", value: bit(value, 5) },
  ];
  if (level === 1 || large) bits.push({ name: "D", bits: "6", value: bit(value, 6) });
  if (level > 1) bits.push({ name: "PS", bits: "7", value: bit(value, 7) });
  else bits.push({ name: "PAT", bits: "7", value: bit(value, 7) });
  if (level === 1 || large) bits.push({ name: "G", bits: "8", value: bit(value, 8) });
  if (level === 1 || large) bits.push({ name: "PK", bits: "62:59", value: field(value, 62, 59) });
  bits.push({ name: "XD", bits: "63", value: bit(value, 63) });
  return bits;
}

/** An EPT paging-structure entry (SDM Tables 29-1 to 29-6). */
export function decodeEptEntry(value: bigint, level: number): EntryBit[] {
  const leaf = level === 1 || (level <= 3 && bit(value, 7) === 1);
  const bits: EntryBit[] = [
    { name: "R", bits: "0", value: bit(value, 0) },
    { name: "W", bits: "1", value: bit(value, 1) },
    { name: "X", bits: "2", value: bit(value, 2) },
  ];
  if (leaf) {
    bits.push({ name: "MT", bits: "5:3", value: field(value, 5, 3) });
    bits.push({ name: "IPAT", bits: "6", value: bit(value, 6) });
  }
  if (level > 1) bits.push({ name: "PS", bits: "7", value: bit(value, 7) });
  bits.push({ name: "A", bits: "8", value: bit(value, 8) });
  if (leaf) bits.push({ name: "D", bits: "9", value: bit(value, 9) });
  bits.push({ name: "Xu", bits: "10", value: bit(value, 10) });
  if (leaf) bits.push({ name: "SVE", bits: "63", value: bit(value, 63) });
  return bits;
}

const PF_BITS: [number, string, string][] = [
  [0, "P", "the page was present: a protection violation, not a missing page"],
  [1, "W/R", "the access was a write"],
  [2, "U/S", "the access was a user-mode access"],
  [3, "RSVD", "a reserved bit was set in a paging-structure entry"],
  [4, "I/D", "the access was an instruction fetch"],
  [5, "PK", "a protection key forbade the access"],
  [6, "SS", "the access was a shadow-stack access"],
  [15, "SGX", "an SGX access-control violation"],
];

const EPT_BITS: [number, string, string][] = [
  [0, "read", "the access was a data read"],
  [1, "write", "the access was a data write"],
  [2, "fetch", "the access was an instruction fetch"],
  [3, "readable", "the EPT entries allowed reads (bit 0 of every entry ANDed)"],
  [4, "writable", "the EPT entries allowed writes"],
  [5, "executable", "the EPT entries allowed instruction fetches"],
  [6, "user-executable", "the EPT entries allowed user-mode fetches (mode-based execute control)"],
  [7, "GLA valid", "the guest linear-address field is valid"],
  [
    8,
    "final",
    "set: the access was to the final guest-physical address; clear: to a guest paging-structure entry",
  ],
  [9, "U/S", "the guest's translation is a user-mode page (final translations)"],
  [10, "R/W", "the guest's translation is writable (final translations)"],
  [11, "XD", "the guest's translation is execute-disable (final translations)"],
  [12, "NMI unblocking", "NMI unblocking due to IRET"],
];

const NPF_BITS: [number, string, string][] = [
  [0, "P", "the nested page was present: a protection or reserved-bit fault"],
  [1, "RW", "the access was a write"],
  [2, "US", "the access was a user access (every nested access is)"],
  [3, "RSVD", "a reserved bit was set in a nested entry"],
  [4, "ID", "the access was an instruction fetch"],
  [32, "final", "the fault was on the final guest-physical address"],
  [33, "table", "the fault was on a guest page-table access"],
];

function decodeFault(result: AccessResult): WalkExplanation["fault"] {
  const code = result.errorCode;
  const bits = (table: [number, string, string][]) =>
    table.map(([n, name, meaning]) => ({
      bit: n,
      name,
      set: Math.floor(code / 2 ** n) % 2 === 1,
      meaning,
    }));
  switch (result.fault) {
    case FaultType.None:
      return undefined;
    case FaultType.PageFault:
      return { name: "#PF (page fault), error code", code, bits: bits(PF_BITS) };
    case FaultType.GeneralProtection:
      return { name: "#GP (non-canonical address)", code, bits: [] };
    case FaultType.EptViolation:
      return { name: "EPT violation, exit qualification", code, gpa: result.gpa, bits: bits(EPT_BITS) };
    case FaultType.EptMisconfig:
      return { name: "EPT misconfiguration", code, gpa: result.gpa, bits: [] };
    case FaultType.PmlFull:
      return { name: "page-modification log full (VM exit 62)", code, bits: [] };
    case FaultType.NestedPageFault:
      return { name: "#NPF (nested page fault), EXITINFO1", code, gpa: result.gpa, bits: bits(NPF_BITS) };
    default:
      return { name: `fault ${result.fault}`, code, bits: [] };
  }
}

/** Named counters of the machine, flattened, to see which moved during the access. */
function cacheCounters(machine: Machine): Map<string, { hits: number; misses: number }> {
  const stats = machine.stats();
  const nested = machine.nestedStats();
  const counters = new Map<string, { hits: number; misses: number }>();
  for (const [name, value] of Object.entries(stats.tlb)) counters.set(`TLB ${name}`, value);
  for (const [name, value] of Object.entries(stats.psc)) counters.set(`PSC ${name}`, value);
  counters.set("nested TLB", nested.nestedTlb);
  for (const [name, value] of Object.entries(nested.nestedPsc)) counters.set(`nested PSC ${name}`, value);
  return counters;
}

/**
 * Translates one access of `cpu` on the machine as it stands (the access changes it as any access
 * would: TLB fills, A/D flags, cache lines) and explains the walk reference by reference. With `cold`,
 * the CPU's TLBs and paging-structure caches, nested ones included, are flushed first.
 */
export function explainWalk(
  machine: Machine,
  cpu: number,
  la: bigint,
  kind: number,
  options: { cold?: boolean; flags?: number } = {},
): WalkExplanation {
  const regs = machine.getRegs(cpu);
  const nested = machine.nestedContext(cpu);
  const guestLevels = (regs.cr4 & (1n << 12n)) !== 0n ? 5 : 4;
  const read = (hpa: bigint) => machine.readPhys64(hpa);
  const dimensions = nested.mode === "none" ? "native" : nested.mode;
  const nestedFormat = nested.mode === "ept" ? "ept" : "x86";
  const decodeNested = nested.mode === "ept" ? decodeEptEntry : decodeX86Entry;

  // The path the walk would take, from the tables as memory holds them now.
  const cells: WalkCell[] = [];
  const nestedRow = (gpa: bigint, guestLevel: number): bigint | undefined => {
    const path = tablePath(read, nested.root, nested.levels, gpa, nestedFormat);
    for (const entry of path.entries) {
      cells.push({
        dimension: "nested",
        guestLevel,
        nestedLevel: entry.level,
        address: entry.address,
        guestPhysical: gpa,
        value: entry.value,
        bits: decodeNested(entry.value, entry.level),
        source: "not-reached",
        cycles: 0,
      });
    }
    return path.translated;
  };
  let table = regs.cr3 & ADDRESS;
  let finalAddress: bigint | undefined;
  for (let level = guestLevels; level >= 1; level--) {
    const entryGpa = table | (indexOf(la, level) << 3n);
    const entryHpa = dimensions === "native" ? entryGpa : nestedRow(entryGpa, level);
    if (entryHpa === undefined) break;
    const value = read(entryHpa);
    cells.push({
      dimension: "guest",
      guestLevel: level,
      nestedLevel: 0,
      address: entryHpa,
      guestPhysical: dimensions === "native" ? undefined : entryGpa,
      value,
      bits: decodeX86Entry(value, level),
      source: "not-reached",
      cycles: 0,
    });
    if ((value & 1n) === 0n) break;
    if (level === 1 || (level <= 3 && (value & 0x80n) !== 0n)) {
      const mask = (1n << BigInt(shiftOf(level))) - 1n;
      finalAddress = (value & ADDRESS & ~mask) | (la & mask);
      break;
    }
    table = value & ADDRESS;
  }
  if (finalAddress !== undefined && dimensions !== "native") nestedRow(finalAddress, 0);

  if (options.cold) machine.flushAll(cpu);
  const before = cacheCounters(machine);
  const { result, references } = machine.traceTranslate(cpu, la, kind, options.flags ?? 0);
  const after = cacheCounters(machine);
  const caches: WalkExplanation["caches"] = [];
  for (const [name, now] of after) {
    const was = before.get(name) ?? { hits: 0, misses: 0 };
    const hits = now.hits - was.hits;
    const misses = now.misses - was.misses;
    if (hits || misses) caches.push({ name, hits, misses });
  }

  // Each read goes to the next cell of the path with its address; an update to the cell it updates.
  const placed: (TracedReference & { cell: number })[] = [];
  let next = 0;
  references.forEach((reference, i) => {
    let cell = -1;
    if (reference.update) {
      for (let c = next - 1; c >= 0 && cell < 0; c--) if (cells[c].address === reference.address) cell = c;
      if (cell >= 0) {
        const { value, cycles, servedBy } = reference;
        cells[cell].update = { order: i + 1, value, cycles, servedBy };
      }
    } else {
      for (let c = next; c < cells.length && cell < 0; c++)
        if (cells[c].address === reference.address) cell = c;
      if (cell >= 0) {
        Object.assign(cells[cell], { source: reference.servedBy, order: i + 1, cycles: reference.cycles });
        cells[cell].value = reference.value;
        next = cell + 1;
      }
    }
    placed.push({ ...reference, cell });
  });
  const faulted = result.fault !== FaultType.None;
  cells.forEach((cell, c) => {
    if (cell.order !== undefined) return;
    if (references.length === 0 && !faulted) cell.source = "tlb";
    else if (faulted && c >= next) cell.source = "not-reached";
    else cell.source = skipReason(cells, cell);
  });
  const tlbHit =
    references.length === 0 && !faulted
      ? (["l1d", "l1i", "l2"] as const).find((level) => caches.find((c) => c.name === `TLB ${level}`)?.hits)
      : undefined;
  return {
    cpu,
    la,
    kind,
    dimensions,
    guestLevels,
    nestedLevels: dimensions === "native" ? 0 : nested.levels,
    result,
    tlbHit,
    cells,
    references: placed,
    caches,
    fault: decodeFault(result),
  };
}

/**
 * Why a cell the walk did not read was needless. A guest entry is skipped only by a paging-structure
 * cache hit, which also makes the nested walk of the next table needless (under a nested dimension the
 * cached entry holds that table's host address). A nested walk entered below its top was a nested
 * paging-structure-cache hit; one skipped whole, a nested TLB hit.
 */
function skipReason(cells: WalkCell[], cell: WalkCell): CellSource {
  if (cell.dimension === "guest") return "psc";
  const row = cells.filter((other) => other.guestLevel === cell.guestLevel);
  if (row.some((other) => other.dimension === "nested" && other.order !== undefined)) return "nested-psc";
  const guest = row.find((other) => other.dimension === "guest");
  if (guest && guest.order === undefined) return "psc";
  const above = cells.find(
    (other) => other.dimension === "guest" && other.guestLevel === cell.guestLevel + 1,
  );
  if (guest && above && above.order === undefined) return "psc";
  return "nested-tlb";
}
