// The "no stale translation" checker. It reads the core's own TLBs, nested TLB and paging-structure
// caches out of linear memory (the layout in src/core/layout.ts) and each VM's EPT/NPT out of
// physical memory, and fails when any cached entry of any vCPU still reaches a host frame the VM's
// nested tables no longer map there, or grants a write they no longer grant. It also checks that the
// host's frame accounting adds up. The host runs it after every mechanism step when it is on. A 2M
// leaf or a 2M cached translation stands for its 512 4K pages: a 2M entry that still maps the same
// frames with the same rights after a split is not stale, one whose region has since changed a page is.
import * as L from "../core/layout.js";
import { type Machine, MemvirtError } from "../core/machine.js";
import type { GuestVm } from "./guest.js";

/** What the checker reads: the machine's memory, the VMs and their nested tables, and KSM's sharers. */
export interface InvariantSubject {
  readonly machine: Machine;
  readonly vms: readonly GuestVm[];
  readonly config: { readonly host: { readonly levels: number } };
  readonly ksm?: { isSharer(key: bigint): boolean };
  key(vm: GuestVm, gpa: bigint): bigint;
}

const ADDRESS = 0x000f_ffff_ffff_f000n;
const LEVEL_NESTED = 3;
/** Bits of an entry's pcid word: the nested dimension denies write (see assembly/mmu/tlb.ts). */
const DENY_W = 1 << 17;
const A_RW = 1n;

interface EptView {
  /** Host frame -> whether some leaf maps it writable. */
  frames: Map<bigint, boolean>;
  /** Guest-physical page -> host frame and writability (a 2M leaf gives its 512 pages). */
  leaves: Map<bigint, { hpa: bigint; writable: boolean }>;
  /** 2M regions mapped by one 2M leaf (region base -> host base and writability). */
  large: Map<bigint, { hpa: bigint; writable: boolean }>;
  /** Host frames holding this VM's nested tables. */
  tables: Set<bigint>;
}

function readEpt(host: InvariantSubject, vm: GuestVm): EptView {
  const machine = host.machine;
  const ept = vm.tdp.name === "ept";
  const view: EptView = { frames: new Map(), leaves: new Map(), tables: new Set(), large: new Map() };
  const walk = (table: bigint, level: number, base: bigint) => {
    view.tables.add(table);
    for (let index = 0n; index < 512n; index++) {
      const entry = machine.readPhys64(table + index * 8n);
      const present = ept ? (entry & 7n) !== 0n : (entry & 1n) !== 0n;
      if (!present) continue;
      const gpa = base + (index << BigInt(12 + 9 * (level - 1)));
      const large = (entry & (1n << 7n)) !== 0n;
      if (level === 1 || large) {
        if (level > 2) throw new MemvirtError(`VM ${vm.vm.id}: 1G nested leaf under overcommit`, 1);
        const base = entry & ADDRESS & ~((1n << BigInt(12 + 9 * (level - 1))) - 1n);
        const writable = (entry & 2n) !== 0n;
        if (level === 2) view.large.set(gpa, { hpa: base, writable });
        const pages = level === 2 ? 512n : 1n;
        for (let i = 0n; i < pages; i++) {
          const hpa = base + (i << 12n);
          view.leaves.set(gpa + (i << 12n), { hpa, writable });
          view.frames.set(hpa, (view.frames.get(hpa) ?? false) || writable);
        }
      } else {
        walk(entry & ADDRESS, level - 1, gpa);
      }
    }
  };
  walk(vm.tdp.root, host.config.host.levels, 0n);
  return view;
}

/** Each valid entry of one TLB level or PSC of `cpu`: address of the entry in linear memory. */
function* tlbEntries(memory: DataView, cpu: number, level: number): Generator<number> {
  const desc = L.CTRL_BASE + L.CPU_BASE + cpu * L.CPU_STRIDE + L.CPU_TLB_LEVELS + level * L.TLB_LEVEL_SIZE;
  if (memory.getUint32(desc + L.TL_PRESENT, true) === 0) return;
  const count = memory.getUint32(desc + L.TL_COUNT, true);
  for (let a = 0; a < count; a++) {
    const array = desc + L.TL_ARRAYS + a * L.ARRAY_DESC_SIZE;
    yield* entriesOf(memory, array, L.TLB_ENTRY_SIZE);
  }
}

/** The entries of the array an array descriptor describes (its base is the array's address). */
function* entriesOf(memory: DataView, desc: number, size: number): Generator<number> {
  const base = memory.getUint32(desc + L.AD_BASE, true);
  const n = 2 ** memory.getUint32(desc + L.AD_SETS_LOG2, true) * memory.getUint32(desc + L.AD_WAYS, true);
  for (let i = 0; i < n; i++) {
    const entry = base + i * size;
    if ((memory.getBigUint64(entry, true) & 1n) !== 0n) yield entry;
  }
}

function* pscEntries(memory: DataView, cpu: number, nested: boolean): Generator<number> {
  const block = L.CTRL_BASE + L.CPU_BASE + cpu * L.CPU_STRIDE + (nested ? L.CPU_NPSC : L.CPU_PSC);
  for (let i = 0; i < 4; i++) {
    const desc = block + i * L.PSC_DESC_SIZE;
    if (memory.getUint32(desc + L.PD_PRESENT, true) === 0) continue;
    yield* entriesOf(memory, desc, L.PSC_ENTRY_SIZE);
  }
}

/** Throws with a description of the first violation. Returns how many cached entries it checked. */
export function checkInvariants(host: InvariantSubject, step: string): number {
  const memory = new DataView(host.machine.memory.buffer);
  const views = host.vms.map((vm) => readEpt(host, vm));
  // Root tag -> VM (the nested TLB and nested PSCs are tagged by root), context id -> VM.
  const rootCount = memory.getUint32(L.CTRL_BASE + L.CFG_ROOTS, true);
  const vmOfRoot = new Map<number, number>();
  for (let tag = 1; tag < rootCount; tag++) {
    const root = memory.getBigUint64(L.CTRL_BASE + L.ROOT_TABLE + tag * 8, true) & ADDRESS;
    const index = host.vms.findIndex((vm) => vm.tdp.root === root);
    if (index >= 0) vmOfRoot.set(tag, index);
  }
  const contextCount = memory.getUint32(L.CTRL_BASE + L.CFG_CONTEXTS, true);
  const vmOfContext = new Map<number, number>();
  for (let id = 1; id < contextCount; id++) {
    const rootTag = memory.getUint32(L.CTRL_BASE + L.CONTEXT_TABLE + id * 8 + 4, true);
    const index = vmOfRoot.get(rootTag);
    if (index !== undefined) vmOfContext.set(id, index);
  }
  const fail = (what: string): never => {
    throw new MemvirtError(`invariant broken after ${step}: ${what}`, 1);
  };
  let checked = 0;
  for (let cpu = 0; cpu < host.vms.length; cpu++) {
    for (let level = 0; level <= LEVEL_NESTED; level++) {
      for (const entry of tlbEntries(memory, cpu, level)) {
        checked++;
        const tag = memory.getBigUint64(entry + 0, true);
        const frameWord = memory.getBigUint64(entry + 8, true);
        const pcidWord = memory.getUint32(entry + 16, true);
        const vmTag = memory.getUint32(entry + 20, true);
        const sizeCode = Number((tag >> 1n) & 3n);
        if (sizeCode > 1) fail(`cpu ${cpu} caches a 1G page under overcommit`);
        // A 2M entry is as good as its 512 4K pages: each must still be mapped to the same frame.
        const pages = sizeCode === 1 ? 512n : 1n;
        const shift = sizeCode === 1 ? 21n : 12n;
        const base = frameWord & ADDRESS & ~((1n << shift) - 1n);
        const allowsWrite =
          (pcidWord & DENY_W) === 0 && (level === LEVEL_NESTED || (frameWord & A_RW) !== 0n);
        const index = level === LEVEL_NESTED ? vmOfRoot.get(vmTag) : vmOfContext.get(vmTag);
        if (index === undefined) continue; // an entry of the host context or of no VM on this host
        const view = views[index];
        if (level === LEVEL_NESTED && sizeCode === 1) {
          // The common case at once: the region is still one 2M leaf to the same frames.
          const leaf = view.large.get((tag >> 3n) << shift);
          if (leaf && leaf.hpa === base && (leaf.writable || !allowsWrite)) continue;
        }
        for (let i = 0n; i < pages; i++) {
          const hpa = base + (i << 12n);
          if (level === LEVEL_NESTED) {
            const gpa = ((tag >> 3n) << shift) + (i << 12n);
            const leaf = view.leaves.get(gpa);
            if (!leaf || leaf.hpa !== hpa) {
              fail(
                `cpu ${cpu}'s nested TLB maps GPA 0x${gpa.toString(16)} of VM ${index + 1} to 0x${hpa.toString(16)}, its EPT to ${leaf ? `0x${leaf.hpa.toString(16)}` : "nothing"}`,
              );
              continue;
            }
            if (allowsWrite && !leaf.writable)
              fail(
                `cpu ${cpu}'s nested TLB lets VM ${index + 1} write GPA 0x${gpa.toString(16)}, which its EPT write-protects`,
              );
          } else {
            const writable = view.frames.get(hpa);
            if (writable === undefined)
              fail(
                `cpu ${cpu}'s TLB (level ${level}) reaches host frame 0x${hpa.toString(16)}, which VM ${index + 1}'s EPT no longer maps`,
              );
            if (allowsWrite && !writable)
              fail(
                `cpu ${cpu}'s TLB (level ${level}) lets VM ${index + 1} write host frame 0x${hpa.toString(16)}, which its EPT maps read-only`,
              );
          }
        }
      }
    }
    for (const nested of [false, true]) {
      for (const entry of pscEntries(memory, cpu, nested)) {
        checked++;
        const next = memory.getBigUint64(entry + 8, true) & ADDRESS;
        const vmTag = memory.getUint32(entry + 20, true);
        const index = nested ? vmOfRoot.get(vmTag) : vmOfContext.get(vmTag);
        if (index === undefined) continue;
        const view = views[index];
        const ok = nested ? view.tables.has(next) : view.frames.has(next);
        if (!ok)
          fail(
            `cpu ${cpu}'s ${nested ? "nested " : ""}paging-structure cache reaches 0x${next.toString(16)}, no longer a ${nested ? "nested table" : "page mapped"} of VM ${index + 1}`,
          );
      }
    }
  }
  // Frame accounting: every VM page's backing is either its own frame or a KSM page it shares, and a
  // 2M leaf exists exactly where the VM's backing is one 2M host page it maps.
  for (let i = 0; i < host.vms.length; i++) {
    const vm = host.vms[i];
    for (const [region, leaf] of views[i].large)
      if (vm.vm.largeAt(region) !== leaf.hpa)
        fail(
          `VM ${i + 1}'s EPT maps 0x${region.toString(16)} with a 2M leaf, but its backing there is not one 2M page`,
        );
    for (const [region] of vm.vm.largeRegions()) {
      if (views[i].large.has(region)) continue;
      for (let offset = 0n; offset < 1n << 21n; offset += 1n << 12n)
        if (views[i].leaves.has(region + offset))
          fail(`VM ${i + 1}'s 2M-backed region 0x${region.toString(16)} is mapped by 4K leaves`);
    }
    for (const [gpa, leaf] of views[i].leaves) {
      const backing = vm.vm.backingAt(gpa);
      if (backing !== leaf.hpa)
        fail(
          `VM ${i + 1}'s EPT maps 0x${gpa.toString(16)} to 0x${leaf.hpa.toString(16)} but its backing is ${backing === undefined ? "gone" : `0x${backing.toString(16)}`}`,
        );
      if (leaf.writable && host.ksm?.isSharer(host.key(vm, gpa)))
        fail(`VM ${i + 1} may write KSM page 0x${leaf.hpa.toString(16)} at 0x${gpa.toString(16)}`);
    }
  }
  return checked;
}
