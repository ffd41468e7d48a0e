// The simulator's shortcuts: memos of work whose outcome cannot have changed since it was done. None
// is hardware. Each is used only while it is current, and a hit leads the model to do exactly what the
// work it skips would have done (the same lines priced, the same references and hits counted, the same
// stamps moved), so results are identical with or without it. Each says below what makes it stale.
// Only this file knows their layouts; the model asks whether one holds and tells it what to remember.
import {
  CFG_MEMORY_GENERATION,
  CTRL_BASE,
  FRAME_MEMO_BASE,
  FRAME_MEMO_SLOTS,
  LINE_MEMO_SLOTS,
  MEMO_ALLOWED,
  MEMO_SIZE,
  MEMO_ENTRY,
  MEMO_GENERATION,
  MEMO_LRU,
  MEMO_PAGE,
  MEMO_SLOTS,
  NESTED_MEMO_BASE,
  NESTED_MEMO_SIZE,
  NESTED_MEMO_SLOTS,
  NM_ADDRESSES,
  NM_CONTEXT,
  NM_ENTRIES,
  NM_FLAGS,
  NM_FRAME,
  NM_GENERATION,
  NM_KEY,
  NM_RIGHTS,
  NM_SIZE_CODE,
  NM_USED,
  WALK_MEMO_BASE,
  WALK_MEMO_SIZE,
  WALK_MEMO_SLOTS,
  WM_GENERATION,
  WM_KEY,
  WM_LEVEL_BASE,
  WM_LEVEL_SIZE,
  WM_LEVELS,
  WM_NESTED,
  WM_ROOT,
  WML_ENTRY,
  WML_GPA,
  WML_HPA,
  WML_RIGHTS,
  WML_TABLE_RIGHTS,
  WM_CPU,
  WM_MAX_REFS,
  WM_NESTED_REFS,
  WM_REF_COUNT,
  WM_REFS,
  WM_TABLE_HPA,
  WM_TABLE_RIGHTS,
  WM_WAYS,
  NM_CPU,
  NM_WAYS,
  WS_ENTRY,
  WS_GPA,
  WS_HPA,
  WS_RIGHTS,
  WS_TABLE_RIGHTS,
  AccessKind,
} from "./constants";
import { allocate } from "./heap";
import { tick } from "./mmu/setassoc";

// --- generations: what the memos below are checked against -------------------------------------------

/**
 * The translation generation: moved by every TLB fill and invalidation and every register write that
 * changes lookups or rights. A global, saved with the core's other globals (snapshot.ts).
 */
export let translationGeneration: u32 = 1;

@inline export function translationsChanged(): void {
  translationGeneration++;
}

/**
 * The memory generation: moved by every store into host memory (in linear memory, so a saved and
 * restored core keeps its memos and their generation in step).
 */
@inline export function memoryGeneration(): u64 {
  return load<u64>(CTRL_BASE + CFG_MEMORY_GENERATION);
}

/** Every store into a frame's bytes calls this (phys.ts's writers, and DMA after storing). */
@inline export function memoryChanged(): void {
  const p = CTRL_BASE + CFG_MEMORY_GENERATION;
  store<u64>(p, load<u64>(p) + 1);
}

// The per-CPU memos are sized regions (heap.ts), as many as the machine has CPUs; the others are
// fixed (constants.ts). Both bases are lasting globals (snapshot.ts saves them).
export let hitMemoBase: usize = 0;
export let lineMemoBase: usize = 0;

/** Allocates the per-CPU memos of a machine with `cpus` CPUs; false when memory cannot hold them. */
export function allocateMemos(cpus: u32): bool {
  hitMemoBase = allocate(<usize>cpus * 2 * MEMO_SLOTS * MEMO_SIZE, 64);
  lineMemoBase = allocate(<usize>cpus * LINE_MEMO_SLOTS * 4, 64);
  return hitMemoBase != 0 && lineMemoBase != 0;
}

// --- L1 hits: page -> the L1 TLB entry that translated it ----------------------------------------------
// Per CPU and L1 level (l1d, l1i), direct-mapped by 4 KiB page. Stale when the translation generation
// moves. While current, another plain access of a kind it allowed finds the same entry; the replay loop
// then only moves the entry's stamp, as the lookup would.

@inline export function hitMemoSlot(cpu: u32, l1Level: u32, la: u64): usize {
  return hitMemoBase + ((((cpu << 1) | l1Level) * MEMO_SLOTS + (<u32>(la >> 12) & (MEMO_SLOTS - 1))) << 5);
}

/** Whether the memo at `slot` holds `la`'s page for an access of `kind` (READ, WRITE or FETCH). */
@inline export function hitMemoHolds(slot: usize, la: u64, kind: u32): bool {
  return (
    load<u64>(slot + MEMO_PAGE) == la >> 12 &&
    load<u32>(slot + MEMO_GENERATION) == translationGeneration &&
    ((load<u32>(slot + MEMO_ALLOWED) >> kind) & 1) != 0
  );
}

/**
 * What a hit the memo replays does to the entry: an LRU array refreshes its stamp (at `stampOffset`).
 * Returns the entry.
 */
@inline export function hitMemoReplay(slot: usize, stampOffset: u32): usize {
  const entry = <usize>load<u32>(slot + MEMO_ENTRY);
  if (load<u32>(slot + MEMO_LRU) != 0) store<u64>(entry + stampOffset, tick());
  return entry;
}

/**
 * Remembers an L1 hit. Only the kind just allowed is marked, plus READ after a WRITE: every rule that
 * lets a write through (U/S, SMAP, keys' AD) lets a read through too. A write to a clean entry is no
 * such hit (it is a D-bit assist, whose walk and in-place fill translate.ts makes), so the memo never
 * stands in for one.
 */
@inline export function rememberHit(cpu: u32, l1Level: u32, la: u64, entry: usize, kind: u32, refreshes: bool): void {
  const slot = hitMemoSlot(cpu, l1Level, la);
  store<u64>(slot + MEMO_PAGE, la >> 12);
  store<u32>(slot + MEMO_GENERATION, translationGeneration);
  store<u32>(slot + MEMO_ALLOWED, kind == AccessKind.Write ? 3 : <u32>1 << kind);
  store<u32>(slot + MEMO_ENTRY, <u32>entry);
  store<u32>(slot + MEMO_LRU, refreshes ? 1 : 0);
}

// --- page-table lines: line -> the L1 data-cache way holding it ----------------------------------------
// Per CPU, direct-mapped by line. Stale when that way holds another line, which the check sees: lines are
// unique in a set, so a way holding the line is where the L1 scan would find it.

@inline export function lineMemoSlot(cpu: u32, line: u64): usize {
  return lineMemoBase + ((cpu * LINE_MEMO_SLOTS + (<u32>line & (LINE_MEMO_SLOTS - 1))) << 2);
}

/** The L1 way the memo at `slot` names (its tag word's address), or 0: check it with `wayHolds`. */
@inline export function rememberedWay(slot: usize): usize {
  return <usize>load<u32>(slot);
}

/** Whether `way` (non-zero) still holds `line`. */
@inline export function wayHolds(way: usize, line: u64): bool {
  return load<u64>(way) == line + 1;
}

/** Empties `cpu`'s page-table line memo: every reference it prices next takes the full lookup. */
export function forgetLines(cpu: u32): void {
  memory.fill(lineMemoSlot(cpu, 0), 0, LINE_MEMO_SLOTS << 2);
}

@inline export function rememberLine(slot: usize, way: usize): void {
  store<u32>(slot, <u32>way);
}

/** The L1 way of `cpu` that holds the line of `pa` as far as the memo knows, or 0: for the memos below. */
@inline export function l1WayOf(cpu: u32, pa: u64): usize {
  const line = pa >> 6;
  const way = rememberedWay(lineMemoSlot(cpu, line));
  return way != 0 && wayHolds(way, line) ? way : 0;
}

// --- frames: frame number -> pool address --------------------------------------------------------------
// Direct-mapped by frame number. Stale when the frame is released: releaseFrame forgets it.

@inline export function frameMemoSlot(frame: u64): usize {
  return FRAME_MEMO_BASE + ((<u32>frame & (FRAME_MEMO_SLOTS - 1)) << 4);
}

/** Whether the memo at `slot` knows `frame`; then frameMemoAddress(slot) is its pool address. */
@inline export function frameMemoHolds(slot: usize, frame: u64): bool {
  return load<u64>(slot) == frame + 1;
}

@inline export function frameMemoAddress(slot: usize): usize {
  return <usize>load<u32>(slot, 8);
}

@inline export function rememberFrame(frame: u64, address: usize): void {
  const slot = frameMemoSlot(frame);
  store<u64>(slot, frame + 1);
  store<u32>(slot, <u32>address, 8);
}

@inline export function forgetFrame(frame: u64): void {
  const slot = frameMemoSlot(frame);
  if (load<u64>(slot) == frame + 1) store<u64>(slot, 0);
}

// --- nested walks: the entries a fault-free nested walk read -------------------------------------------
// Two direct-mapped tables: walks of guest paging-structure pages, whole, by 4 KiB page; walks of final
// addresses, by 2 MiB region, down to the page table (or a large leaf), so a hit reads the 4K leaf
// again. Stale when the memory generation moves or the nested context differs (root, mode, depth, A/D).

export const NESTED_FOR_TABLE: bool = false;
export const NESTED_FOR_FINAL: bool = true;

@inline function nestedKey(gpa: u64, final: bool): u64 {
  return (gpa >> (final ? 21 : 12)) + 1;
}

@inline export function nestedMemoSlot(gpa: u64, final: bool): usize {
  const index = <u32>(gpa >> (final ? 21 : 12)) & (NESTED_MEMO_SLOTS - 1);
  return NESTED_MEMO_BASE + (final ? NESTED_MEMO_SLOTS * NESTED_MEMO_SIZE : 0) + <usize>index * NESTED_MEMO_SIZE;
}

/** Whether the memo at `slot` holds a current walk of `gpa` in `context`. */
@inline export function nestedMemoHolds(slot: usize, gpa: u64, final: bool, context: u64): bool {
  return (
    load<u64>(slot, NM_KEY) == nestedKey(gpa, final) &&
    load<u64>(slot, NM_CONTEXT) == context &&
    load<u64>(slot, NM_GENERATION) == memoryGeneration()
  );
}

/**
 * Makes the L1 ways the memo at `slot` keeps (NM_WAYS: hints for priceHintedRun, next to the addresses
 * at NM_ADDRESSES) `cpu`'s: when they are another CPU's, they are forgotten.
 */
@inline export function nestedMemoWaysFor(slot: usize, cpu: u32): void {
  if (load<u32>(slot, NM_CPU) == cpu) return;
  store<u32>(slot, cpu, NM_CPU);
  memory.fill(slot + NM_WAYS, 0, 5 << 2);
}

/**
 * Remembers a walk of `cpu`: the first `stored` entries of the nested scratch (`stride` bytes a slot:
 * u64 address, u64 value) and the L1 ways holding their lines, their size code, rights and flags
 * (NMF_*), and the large leaf's frame or the page table's address.
 */
export function rememberNestedWalk(
  cpu: u32,
  slot: usize,
  gpa: u64,
  final: bool,
  context: u64,
  scratch: usize,
  stride: u32,
  stored: u32,
  sizeCode: u32,
  rights: u32,
  flags: u32,
  frame: u64,
): void {
  for (let i: u32 = 0; i < stored; i++) {
    const s = scratch + i * stride;
    const address = load<u64>(s);
    store<u64>(slot + NM_ADDRESSES + (i << 3), address);
    store<u64>(slot + NM_ENTRIES + (i << 3), load<u64>(s, 8));
    store<u32>(slot + NM_WAYS + (i << 2), <u32>l1WayOf(cpu, address));
  }
  store<u32>(slot, cpu, NM_CPU);
  store<u64>(slot, nestedKey(gpa, final), NM_KEY);
  store<u64>(slot, context, NM_CONTEXT);
  store<u64>(slot, memoryGeneration(), NM_GENERATION);
  store<u8>(slot, <u8>stored, NM_USED);
  store<u8>(slot, <u8>sizeCode, NM_SIZE_CODE);
  store<u8>(slot, <u8>rights, NM_RIGHTS);
  store<u8>(slot, <u8>flags, NM_FLAGS);
  store<u64>(slot, frame, NM_FRAME);
}

// --- guest walks: the entries from the top level down to the page-directory entry ----------------------
// Direct-mapped by 2 MiB linear region, with each table page's nested references under EPT/NPT. Used
// only where no cache stands in between, so a hit prices exactly the lines and counts exactly the
// references of the walk it replaces. Stale when the memory generation moves, or CR3's table, LA57, NXE
// or the nested context differ.

@inline export function walkMemoSlot(la: u64): usize {
  return WALK_MEMO_BASE + <usize>(<u32>(la >> 21) & (WALK_MEMO_SLOTS - 1)) * WALK_MEMO_SIZE;
}

/** Levels the memo at `slot` holds for `la` in this context (0: none). */
@inline export function walkMemoLevels(slot: usize, la: u64, root: u64, nested: u64): u32 {
  if (
    load<u64>(slot, WM_KEY) == (la >> 21) + 1 &&
    load<u64>(slot, WM_ROOT) == root &&
    load<u64>(slot, WM_NESTED) == nested &&
    load<u64>(slot, WM_GENERATION) == memoryGeneration()
  ) {
    return load<u32>(slot, WM_LEVELS);
  }
  return 0;
}

/** The remembered level `i` (top first): WML_* fields. */
@inline export function walkMemoLevel(slot: usize, i: u32): usize {
  return slot + WM_LEVEL_BASE + i * WM_LEVEL_SIZE;
}

/**
 * Makes the L1 ways the memo at `slot` keeps (WM_WAYS: hints for priceHintedRun, next to the addresses
 * at WM_REFS) `cpu`'s: when they are another CPU's, they are forgotten.
 */
@inline export function walkMemoWaysFor(slot: usize, cpu: u32): void {
  if (load<u32>(slot, WM_CPU) == cpu) return;
  store<u32>(slot, cpu, WM_CPU);
  memory.fill(slot + WM_WAYS, 0, WM_MAX_REFS << 2);
}

/** Appends reference `pa` and the L1 way of `cpu` holding its line to the guest-walk memo at `slot`. */
@inline function rememberRef(slot: usize, count: u32, cpu: u32, pa: u64): u32 {
  store<u64>(slot + WM_REFS + (count << 3), pa);
  store<u32>(slot + WM_WAYS + (count << 2), <u32>l1WayOf(cpu, pa));
  return count + 1;
}

/**
 * Remembers the walk `cpu` just made, whose scratch (`stride` bytes a level, WS_* fields) holds `levels`
 * entries above the page table, then the page table's. Under a nested dimension each table page's nested
 * references (the page table's too) come from the nested memo of table pages, which must hold them for
 * this generation; else nothing is kept.
 */
export function rememberGuestWalk(
  cpu: u32,
  slot: usize,
  la: u64,
  root: u64,
  nested: u64,
  scratch: usize,
  stride: u32,
  levels: u32,
  virtualized: bool,
  nestedContext: u64,
): void {
  if (virtualized) {
    for (let i: u32 = 0; i <= levels; i++) {
      const gpa = load<u64>(scratch + i * stride, WS_GPA);
      if (!nestedMemoHolds(nestedMemoSlot(gpa, NESTED_FOR_TABLE), gpa, NESTED_FOR_TABLE, nestedContext)) return;
    }
  }
  // Every reference in the order the walk made them: a level's table page's nested references, then
  // its entry.
  let refs: u32 = 0;
  let nestedRefs: u32 = 0;
  for (let i: u32 = 0; i < levels; i++) {
    const s = scratch + i * stride;
    const m = walkMemoLevel(slot, i);
    if (virtualized) {
      const gpa = load<u64>(s, WS_GPA);
      const table = nestedMemoSlot(gpa, NESTED_FOR_TABLE);
      const n = <u32>load<u8>(table, NM_USED);
      for (let j: u32 = 0; j < n; j++) refs = rememberRef(slot, refs, cpu, load<u64>(table + NM_ADDRESSES + (j << 3)));
      nestedRefs += n;
      store<u64>(m, gpa, WML_GPA);
      store<u32>(m, load<u32>(s, WS_TABLE_RIGHTS), WML_TABLE_RIGHTS);
    }
    const hpa = load<u64>(s, WS_HPA);
    refs = rememberRef(slot, refs, cpu, hpa);
    store<u64>(m, hpa, WML_HPA);
    store<u64>(m, load<u64>(s, WS_ENTRY), WML_ENTRY);
    store<u64>(m, load<u64>(s, WS_RIGHTS), WML_RIGHTS);
  }
  if (virtualized) {
    const s = scratch + levels * stride;
    const table = nestedMemoSlot(load<u64>(s, WS_GPA), NESTED_FOR_TABLE);
    const n = <u32>load<u8>(table, NM_USED);
    for (let j: u32 = 0; j < n; j++) refs = rememberRef(slot, refs, cpu, load<u64>(table + NM_ADDRESSES + (j << 3)));
    nestedRefs += n;
    store<u64>(slot, load<u64>(s, WS_HPA) & ~(<u64>0xfff), WM_TABLE_HPA);
    store<u32>(slot, load<u32>(s, WS_TABLE_RIGHTS), WM_TABLE_RIGHTS);
  }
  store<u32>(slot, cpu, WM_CPU);
  store<u32>(slot, refs, WM_REF_COUNT);
  store<u32>(slot, nestedRefs, WM_NESTED_REFS);
  store<u64>(slot, (la >> 21) + 1, WM_KEY);
  store<u64>(slot, root, WM_ROOT);
  store<u64>(slot, nested, WM_NESTED);
  store<u64>(slot, memoryGeneration(), WM_GENERATION);
  store<u32>(slot, levels, WM_LEVELS);
}
