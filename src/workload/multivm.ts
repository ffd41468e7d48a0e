// Multi-VM workloads for the overcommitted host. Each VM runs one application in one address space;
// the workload declares what its memory holds (the content mix), boots each VM by touching all of its
// memory once, then runs seeded accesses. Record cpu = VM index (each VM's vCPU is pinned to a CPU).
// - identical-vms: N VMs booted from one OS image: sharedFraction of each VM's pages are image pages
//   (page cache, identical across VMs), zeroFraction are zero pages, the rest private heap data.
// - cloud-mix: VMs running different applications (web, database, cache, batch), with different mixes
//   of image, zero, heap and random pages, whose hot set moves to another part of the heap each phase.
// - memory-hog: one VM keeps touching new memory until the host is under pressure; the others idle
//   over a steady working set.
import { MemvirtError } from "../core/machine.js";
import {
  type ContentClass,
  fingerprintOf,
  imageContent,
  makeContent,
  type PageContent,
  ZERO_CONTENT,
} from "../overcommit/content.js";
import type { GuestRegion, MultiVmWorkload } from "../overcommit/host.js";
import { Rng } from "../util/random.js";
import type { MultiVmWorkloadName } from "./catalog.js";

export { MULTI_VM_WORKLOADS, type MultiVmWorkloadName } from "./catalog.js";

export interface MultiVmOptions {
  name: MultiVmWorkloadName;
  vms: number;
  pagesPerVm: number;
  sharedFraction: number;
  zeroFraction: number;
  seed: number;
  /** Accesses after boot, over all VMs. */
  records: number;
  /** Simulated seconds the run lasts. */
  seconds: number;
  writeFraction: number;
}

export function defaultMultiVmOptions(name: MultiVmWorkloadName): MultiVmOptions {
  return {
    name,
    vms: name === "memory-hog" ? 3 : 4,
    pagesPerVm: name === "identical-vms" ? 10_000 : 8192,
    sharedFraction: 0.5,
    zeroFraction: 0,
    seed: 1,
    records: name === "identical-vms" ? 0 : 400_000,
    seconds: 30,
    writeFraction: 0.3,
  };
}

const BASE = 0x1000_0000n;
const PAGE = 0x1000n;

interface VmPlan {
  image: number;
  /** Page counts of the image (file), zero, heap and random parts, in that order from BASE. */
  parts: Record<ContentClass, number>;
  memoryPages: number;
  /** Pages touched at boot (memory-hog's hog starts small and grows). */
  bootPages: number;
  fill: bigint;
}

const ORDER: ContentClass[] = ["image", "zero", "fill", "heap", "random"];

function plan(parts: Partial<Record<ContentClass, number>>, image: number, headroom: number): VmPlan {
  const full: Record<ContentClass, number> = { image: 0, zero: 0, fill: 0, heap: 0, random: 0, ...parts };
  const pages = ORDER.reduce((sum, cls) => sum + full[cls], 0);
  return {
    image,
    parts: full,
    // Guest RAM: the application, its page tables (one per 512 pages, plus the upper levels), headroom.
    memoryPages: pages + Math.ceil(pages / 512) + 16 + headroom,
    bootPages: pages,
    fill: 0x5a5a5a5a5a5a5a5an,
  };
}

function split(
  pages: number,
  fractions: Partial<Record<ContentClass, number>>,
): Record<ContentClass, number> {
  const result: Record<ContentClass, number> = { image: 0, zero: 0, fill: 0, heap: 0, random: 0 };
  let assigned = 0;
  for (const cls of ORDER) {
    if (cls === "heap") continue;
    result[cls] = Math.round(pages * (fractions[cls] ?? 0));
    assigned += result[cls];
  }
  if (assigned > pages) throw new MemvirtError("workload: the content fractions add up to more than 1");
  result.heap = pages - assigned;
  return result;
}

const APPS: { name: string; mix: Partial<Record<ContentClass, number>> }[] = [
  { name: "web", mix: { image: 0.55, zero: 0.1, random: 0.05 } },
  { name: "database", mix: { image: 0.15, zero: 0.05, random: 0.2 } },
  { name: "cache", mix: { image: 0.1, zero: 0.02, fill: 0.03, random: 0.45 } },
  { name: "batch", mix: { image: 0.2, zero: 0.4 } },
];

export class MultiVm implements MultiVmWorkload {
  readonly name: string;
  readonly vms: { memoryPages: number; image: number; regions: GuestRegion[] }[];
  readonly seconds: number;
  readonly plans: VmPlan[];
  readonly apps: string[];
  private readonly rng: Rng;
  private readonly source: Generator<[number, bigint, boolean]>;

  constructor(readonly options: MultiVmOptions) {
    const o = options;
    if (!Number.isInteger(o.vms) || o.vms < 1 || o.vms > 16) throw new MemvirtError("--vms: must be 1 to 16");
    if (!Number.isInteger(o.pagesPerVm) || o.pagesPerVm < 16)
      throw new MemvirtError("--pages-per-vm: must be an integer of at least 16");
    for (const [key, value] of [
      ["shared-fraction", o.sharedFraction],
      ["zero-fraction", o.zeroFraction],
      ["write-fraction", o.writeFraction],
    ] as const) {
      if (!(value >= 0 && value <= 1)) throw new MemvirtError(`--${key}: must be from 0 to 1`);
    }
    if (o.sharedFraction + o.zeroFraction > 1)
      throw new MemvirtError("--shared-fraction + --zero-fraction: must be at most 1");
    this.name = o.name;
    this.seconds = o.seconds;
    this.rng = new Rng(o.seed ^ 0x3c6ef372);
    this.apps = [];
    this.plans = [];
    for (let vm = 0; vm < o.vms; vm++) {
      if (o.name === "identical-vms") {
        this.apps.push("idle");
        this.plans.push(
          plan(split(o.pagesPerVm, { image: o.sharedFraction, zero: o.zeroFraction }), 1, o.pagesPerVm >> 3),
        );
      } else if (o.name === "cloud-mix") {
        const app = APPS[vm % APPS.length];
        this.apps.push(app.name);
        this.plans.push(plan(split(o.pagesPerVm, app.mix), 1, o.pagesPerVm >> 3));
      } else {
        // The hog's heap can grow to 4x the others' memory; it boots with a quarter of it.
        const hog = vm === 0;
        const pages = hog ? o.pagesPerVm * 4 : o.pagesPerVm;
        const p = plan(
          split(pages, { image: o.sharedFraction * (hog ? 0.25 : 1), zero: o.zeroFraction }),
          1,
          64,
        );
        if (hog) p.bootPages = Math.floor(o.pagesPerVm / 2);
        this.apps.push(hog ? "hog" : "steady");
        this.plans.push(p);
      }
    }
    this.vms = this.plans.map((p) => {
      const regions: GuestRegion[] = [];
      let start = BASE;
      for (const cls of ORDER) {
        const pages = p.parts[cls];
        if (pages === 0) continue;
        regions.push({ start, pages, file: cls === "image" });
        start += BigInt(pages) * PAGE;
      }
      return { memoryPages: p.memoryPages, image: p.image, regions };
    });
    this.source = this.accesses();
  }

  /** The class of a guest-virtual page of VM `vm`, and its index in the image. */
  private classOf(vm: number, page: bigint): { cls: ContentClass; index: number } | undefined {
    const p = this.plans[vm];
    let index = Number((page - BASE) / PAGE);
    if (index < 0) return undefined;
    for (const cls of ORDER) {
      if (index < p.parts[cls]) return { cls, index };
      index -= p.parts[cls];
    }
    return undefined;
  }

  contentOfWrite(vm: number, page: bigint, sequence: number): PageContent {
    const where = this.classOf(vm, page);
    if (!where || where.cls === "zero") return ZERO_CONTENT;
    if (where.cls === "fill") return makeContent("fill", this.plans[vm].fill);
    const cls: ContentClass = where.cls === "image" ? "heap" : where.cls;
    return makeContent(cls, fingerprintOf(2, vm, page, sequence));
  }

  fileContent(vm: number, page: bigint): PageContent | undefined {
    const where = this.classOf(vm, page);
    return where?.cls === "image" ? imageContent(this.plans[vm].image, where.index) : undefined;
  }

  private pageAt(vm: number, cls: ContentClass, index: number): bigint {
    const p = this.plans[vm];
    let offset = 0;
    for (const c of ORDER) {
      if (c === cls) break;
      offset += p.parts[c];
    }
    return BASE + BigInt(offset + index) * PAGE;
  }

  /** Boot: every VM touches its memory once, interleaved; then the access phase. */
  private *accesses(): Generator<[number, bigint, boolean]> {
    const o = this.options;
    const count = this.plans.length;
    const maxBoot = Math.max(...this.plans.map((p) => p.bootPages));
    const bootOrder = (vm: number, i: number): [bigint, boolean] | undefined => {
      const p = this.plans[vm];
      if (i >= p.bootPages) return undefined;
      let index = i;
      for (const cls of ORDER) {
        if (index < p.parts[cls]) return [this.pageAt(vm, cls, index), cls !== "image"];
        index -= p.parts[cls];
      }
      return undefined;
    };
    for (let i = 0; i < maxBoot; i++) {
      for (let vm = 0; vm < count; vm++) {
        const access = bootOrder(vm, i);
        if (access) yield [vm, access[0], access[1]];
      }
    }
    const phaseLength = Math.max(1, Math.floor(o.records / 8));
    for (let n = 0; n < o.records; n++) {
      const vm = n % count;
      const p = this.plans[vm];
      const app = this.apps[vm];
      const phase = Math.floor(n / phaseLength);
      let page: bigint;
      let write = this.rng.next() < o.writeFraction;
      if (app === "hog") {
        // The hog touches a new heap page every fourth access, until its heap is all in use.
        const grown = Math.min(p.parts.heap, p.bootPages + Math.floor(n / (4 * count)));
        const index = this.rng.next() < 0.25 ? grown - 1 : this.rng.below(Math.max(1, grown));
        page = this.pageAt(vm, "heap", Math.min(index, p.parts.heap - 1));
        write = true;
      } else if (app === "steady") {
        // A steady working set: the application's anonymous memory; its page cache stays cold.
        const anon = p.bootPages - p.parts.image;
        const where = bootOrder(vm, p.parts.image + this.rng.below(Math.max(1, anon))) as [bigint, boolean];
        page = where[0];
      } else if (app === "idle" || this.rng.next() < 0.2) {
        const total = p.bootPages;
        const where = bootOrder(vm, this.rng.below(total)) as [bigint, boolean];
        page = where[0];
        if (!where[1]) write = false;
      } else {
        // The hot quarter of the heap moves every phase.
        const heap = p.parts.heap + p.parts.random;
        const hot = Math.max(1, Math.floor(heap / 4));
        const index = (phase * hot + this.rng.below(hot)) % Math.max(1, heap);
        page = this.pageAt(
          vm,
          index < p.parts.heap ? "heap" : "random",
          index < p.parts.heap ? index : index - p.parts.heap,
        );
      }
      yield [vm, page + BigInt(this.rng.below(64)) * 64n, write];
    }
  }

  fill(
    view: DataView,
    capacity: number,
    host: { readonly vms: readonly { readonly alive: boolean }[] },
  ): number {
    let count = 0;
    while (count < capacity) {
      const next = this.source.next();
      if (next.done) break;
      const [vm, la, write] = next.value;
      // An OOM-killed application issues no more accesses.
      if (!host.vms[vm].alive) continue;
      const offset = count * 16;
      view.setBigUint64(offset, la, true);
      view.setUint8(offset + 8, write ? 1 : 0);
      view.setUint8(offset + 9, 8);
      view.setUint16(offset + 10, vm, true);
      view.setUint32(offset + 12, 0, true);
      count++;
    }
    return count;
  }
}
