// KSM (Linux mm/ksm.c, docs/overcommit.md §KSM): ksmd wakes every sleep_millisecs of simulated time, scans
// pages_to_scan guest pages, and merges pages with equal contents into one write-protected host page.
// A page first has to keep its checksum over a whole pass before it may enter the unstable tree; a
// page equal to a stable (merged) page joins it; two equal unstable pages start a new stable page.
// Each merge write-protects the sharer's EPT entry, points it at the KSM page, frees the old frame
// and shoots down the VM's stale translations; a later write is an EPT violation that copies the
// page back (a COW break, cow_ksm), charged to the writer.
import type { ExitRecord } from "../core/machine.js";
import type { HostTimer, NestedFaultHook } from "../host/hooks.js";
import { CYCLES_TDP, type ExitAction } from "../hypervisor/technique.js";
import type { GuestVm } from "./guest.js";
import type { OvercommitServices } from "./services.js";

interface StableNode {
  /** Content key (fingerprint, and the VM when merging across VMs is off). */
  content: string;
  hpa: bigint;
  sharers: Set<bigint>;
  /** The host zero page of use_zero_pages: not a KSM page, counted in ksm_zero_pages. */
  zero: boolean;
}

interface RmapItem {
  key: bigint;
  /** The page's checksum at its last scan (the fingerprint stands in for xxhash of the bytes). */
  checksum: bigint | undefined;
  /** The pass whose unstable tree holds it, or -1. */
  unstablePass: number;
}

export interface KsmCounters {
  pages_shared: number;
  pages_sharing: number;
  pages_unshared: number;
  pages_volatile: number;
  full_scans: number;
  cow_ksm: number;
  ksm_zero_pages: number;
  stable_node_chains: number;
  stable_node_dups: number;
  general_profit: number;
  pages_scanned: number;
  merges: number;
  /** Simulated seconds of the last complete pass. */
  last_pass_seconds: number;
  /** Cycles a writer lost to its COW breaks: total, worst (the timing channel a co-tenant can probe). */
  cow_break_cycles: number;
  cow_break_max_cycles: number;
}

/** Bytes of one rmap_item, for general_profit (ksm.rst: profit = sharing * 4K - rmap_items * size). */
const RMAP_ITEM_BYTES = 64;

export class Ksm implements HostTimer, NestedFaultHook {
  nextAt: number;
  readonly counters: KsmCounters = {
    pages_shared: 0,
    pages_sharing: 0,
    pages_unshared: 0,
    pages_volatile: 0,
    full_scans: 0,
    cow_ksm: 0,
    ksm_zero_pages: 0,
    stable_node_chains: 0,
    stable_node_dups: 0,
    general_profit: 0,
    pages_scanned: 0,
    merges: 0,
    last_pass_seconds: 0,
    cow_break_cycles: 0,
    cow_break_max_cycles: 0,
  };
  /** Stable tree, keyed by content; a key with several nodes is a chain of duplicates. */
  private readonly stable = new Map<string, StableNode[]>();
  /** Unstable tree of the current pass, keyed by content. */
  private unstable = new Map<string, RmapItem>();
  private readonly items = new Map<bigint, RmapItem>();
  private readonly sharerOf = new Map<bigint, StableNode>();
  private zeroNode: StableNode | undefined;
  /** The pass in progress: its scan list and where ksmd is in it. */
  private scanList: bigint[] = [];
  private cursor = 0;
  private pass = 0;
  private passStartedAt = 0;
  /** Raised by the controller (MoM's pages_to_scan steps). */
  pagesToScan: number;
  /** COW breaks and the cycles they cost, per writing VM (the writer pays). */
  readonly cowByVm: { breaks: number; cycles: number }[];
  /** ksm/run: the vSphere controller runs it only below its clear threshold; MoM switches it. */
  running = true;

  constructor(private readonly host: OvercommitServices) {
    this.pagesToScan = host.oc.ksm.pagesToScan;
    this.cowByVm = host.vms.map(() => ({ breaks: 0, cycles: 0 }));
    this.nextAt = host.ms(host.oc.ksm.sleepMillisecs);
  }

  isSharer(key: bigint): boolean {
    return this.sharerOf.has(key);
  }

  /** Guest pages KSM saves now (the sharers beyond the first of each KSM page, and zero-page sharers). */
  get savedPages(): number {
    return this.counters.pages_sharing + this.counters.ksm_zero_pages;
  }

  private contentKey(vm: GuestVm, fingerprint: bigint): string {
    return this.host.oc.ksm.mergeAcrossVms
      ? fingerprint.toString(16)
      : `${vm.index}:${fingerprint.toString(16)}`;
  }

  /** ksmd sleeps sleep_millisecs between wake-ups. */
  get period(): number {
    return this.host.ms(this.host.oc.ksm.sleepMillisecs);
  }

  /** A write to a merged page is an EPT violation (#NPF) that breaks the share first. */
  nestedFault(guest: number, exit: ExitRecord): ExitAction | undefined {
    const vm = this.host.vms[guest];
    // EPT qualification bit 1 and #NPF EXITINFO1 bit 1 both mean a write.
    if ((exit.qualification & 2n) === 0n || !this.isSharer(this.host.key(vm, exit.guestPhysical))) return;
    this.breakCow(vm, exit.guestPhysical, true);
    this.host.check("ksm cow break");
    return "retry";
  }

  /** ksmd's wake-up: scan pages_to_scan pages, then sleep until the next period. */
  fire(): void {
    const period = this.host.ms(this.host.oc.ksm.sleepMillisecs);
    const scheduled = this.nextAt;
    this.nextAt += period;
    if (!this.running) return;
    // A wake-up's pages are timed evenly over its period, so a pass over P pages lasts exactly
    // P / pages_to_scan periods wherever in a wake-up it starts.
    const at = (n: number) => scheduled + (n * period) / this.pagesToScan;
    for (let n = 0; n < this.pagesToScan; n++) {
      if (this.cursor >= this.scanList.length) this.startPass(at(n));
      if (this.scanList.length === 0) break;
      this.scanPage(this.scanList[this.cursor++]);
      if (this.cursor >= this.scanList.length) this.endPass(at(n + 1));
    }
    this.updateCounters();
    this.host.check("ksm scan");
  }

  /**
   * A pass walks every mergeable page: each VM's application pages in guest-physical order (the
   * order of the VMM's guest-RAM mapping, as ksmd walks an mm's VMAs).
   */
  private startPass(at: number): void {
    this.scanList = [];
    for (const vm of this.host.vms) {
      const pages = [...vm.gpaToGva.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      for (const gpa of pages) this.scanList.push(this.host.key(vm, gpa));
    }
    this.cursor = 0;
    this.passStartedAt = at;
  }

  private endPass(at: number): void {
    this.counters.full_scans++;
    this.counters.last_pass_seconds = +this.host.seconds(at - this.passStartedAt).toFixed(6);
    // The unstable tree is rebuilt every pass (its items leave it as they are scanned again).
    this.unstable = new Map();
    this.pass++;
  }

  /** cmp_and_merge_page for one page. */
  private scanPage(key: bigint): void {
    const host = this.host;
    host.charge("ksm", host.oc.ksm.scanCyclesPerPage);
    this.counters.pages_scanned++;
    const vm = host.vmOfKey(key);
    const gpa = host.gpaOfKey(key);
    // A page the guest no longer maps, or the host has not backed or has reclaimed, is skipped.
    if (!vm.gpaToGva.has(gpa) || host.frameOf(vm, gpa) === undefined) return;
    let item = this.items.get(key);
    if (!item) {
      item = { key, checksum: undefined, unstablePass: -1 };
      this.items.set(key, item);
    }
    if (item.unstablePass >= 0) {
      item.unstablePass = -1;
      this.counters.pages_unshared--;
    }
    if (this.sharerOf.has(key)) return;
    const content = host.contentOf(vm, gpa);
    if (content.cls === "zero" && host.oc.ksm.useZeroPages) {
      this.mergeIntoZeroPage(vm, gpa);
      return;
    }
    const contentKey = this.contentKey(vm, content.fingerprint);
    // 1. The stable tree: a KSM page with these contents and room for another sharer.
    const chain = this.stable.get(contentKey);
    const node = chain?.find((n) => n.sharers.size < host.oc.ksm.maxPageSharing);
    if (node) {
      this.merge(vm, gpa, node);
      return;
    }
    // 2. Only a page whose checksum held since the last pass may enter the unstable tree.
    if (item.checksum !== content.fingerprint) {
      item.checksum = content.fingerprint;
      return;
    }
    const partner = this.unstable.get(contentKey);
    if (
      partner &&
      partner.key !== key &&
      partner.unstablePass === this.pass &&
      !this.sharerOf.has(partner.key)
    ) {
      const partnerVm = host.vmOfKey(partner.key);
      const partnerGpa = host.gpaOfKey(partner.key);
      const partnerContent = host.contentOf(partnerVm, partnerGpa);
      if (
        partnerContent.fingerprint === content.fingerprint &&
        host.frameOf(partnerVm, partnerGpa) !== undefined
      ) {
        this.unstable.delete(contentKey);
        partner.unstablePass = -1;
        this.counters.pages_unshared--;
        const created = this.newStableNode(partnerVm, partnerGpa, contentKey);
        this.merge(vm, gpa, created);
        return;
      }
    }
    this.unstable.set(contentKey, item);
    item.unstablePass = this.pass;
    this.counters.pages_unshared++;
  }

  /** The tree page becomes a KSM page: its EPT entry is write-protected (one shootdown). */
  private newStableNode(vm: GuestVm, gpa: bigint, contentKey: string): StableNode {
    const host = this.host;
    // A page of a 2M mapping is merged alone: the mapping is split first.
    host.breakLargePage(vm, gpa, "ksm");
    const hpa = host.frameOf(vm, gpa) as bigint;
    vm.tdp.mapPage(gpa, hpa, false);
    host.flush(vm, "ksm");
    const node: StableNode = { content: contentKey, hpa, sharers: new Set([host.key(vm, gpa)]), zero: false };
    this.sharerOf.set(host.key(vm, gpa), node);
    const chain = this.stable.get(contentKey);
    if (chain) chain.push(node);
    else this.stable.set(contentKey, [node]);
    return node;
  }

  /**
   * try_to_merge_one_page: write-protect the sharer's entry (a shootdown), then replace it with the KSM
   * page read-only (another), and free the old frame, which is scrubbed before it is reused.
   */
  private merge(vm: GuestVm, gpa: bigint, node: StableNode): void {
    const host = this.host;
    host.breakLargePage(vm, gpa, "ksm");
    const old = host.frameOf(vm, gpa) as bigint;
    vm.tdp.mapPage(gpa, old, false);
    host.flush(vm, "ksm");
    vm.tdp.mapPage(gpa, node.hpa, false);
    vm.vm.setBacking(gpa & ~0xfffn, node.hpa);
    host.flush(vm, "ksm");
    host.frames.release(old, "4K");
    const key = host.key(vm, gpa);
    node.sharers.add(key);
    this.sharerOf.set(key, node);
    this.counters.merges++;
  }

  private mergeIntoZeroPage(vm: GuestVm, gpa: bigint): void {
    const host = this.host;
    if (!this.zeroNode) {
      // The host's shared zero page: allocated once, never written, never freed.
      this.zeroNode = { content: "zero", hpa: host.frames.alloc("4K"), sharers: new Set(), zero: true };
    }
    this.merge(vm, gpa, this.zeroNode);
  }

  /**
   * A write to a merged page (the EPT violation when `fault`, or the VMM writing it): copy the KSM
   * page to a fresh frame, map that writable, and shoot down the read-only translations.
   */
  breakCow(vm: GuestVm, gpa: bigint, fault: boolean): void {
    const host = this.host;
    const key = host.key(vm, gpa);
    const node = this.sharerOf.get(key);
    if (!node) return;
    let cycles = fault ? host.exit("ksm", vm, false) : 0;
    const fresh = host.frames.alloc("4K");
    host.frames.setContent(fresh, host.frames.contentOf(node.hpa));
    host.charge("ksm", host.oc.ksm.copyCycles, CYCLES_TDP);
    host.charge("ksm", host.costs.tdpFault, CYCLES_TDP);
    cycles += host.oc.ksm.copyCycles + host.costs.tdpFault;
    vm.tdp.mapPage(gpa, fresh, true);
    vm.vm.setBacking(gpa & ~0xfffn, fresh);
    cycles += host.flush(vm, "ksm");
    this.detach(key, node);
    if (!node.zero) this.counters.cow_ksm++;
    if (fault) {
      this.cowByVm[vm.index].breaks++;
      this.cowByVm[vm.index].cycles += cycles;
      this.counters.cow_break_cycles += cycles;
      this.counters.cow_break_max_cycles = Math.max(this.counters.cow_break_max_cycles, cycles);
    }
    this.updateCounters();
  }

  /**
   * The guest gave the page up (balloon inflation): it stops sharing without a copy. The caller has
   * already unmapped it and dropped the backing.
   */
  forget(key: bigint): void {
    const node = this.sharerOf.get(key);
    if (node) this.detach(key, node);
    const item = this.items.get(key);
    if (item && item.unstablePass >= 0) this.counters.pages_unshared--;
    this.items.delete(key);
    this.updateCounters();
  }

  private detach(key: bigint, node: StableNode): void {
    node.sharers.delete(key);
    this.sharerOf.delete(key);
    if (node.sharers.size > 0 || node.zero) return;
    // The last sharer left: the KSM page is freed and its node leaves the stable tree.
    const chain = this.stable.get(node.content) ?? [];
    const remaining = chain.filter((n) => n !== node);
    if (remaining.length > 0) this.stable.set(node.content, remaining);
    else this.stable.delete(node.content);
    this.host.frames.release(node.hpa, "4K");
  }

  private updateCounters(): void {
    let shared = 0;
    let sharing = 0;
    let chains = 0;
    let dups = 0;
    for (const chain of this.stable.values()) {
      if (chain.length > 1) {
        chains++;
        dups += chain.length;
      }
      for (const node of chain) {
        shared++;
        sharing += node.sharers.size - 1;
      }
    }
    const c = this.counters;
    c.pages_shared = shared;
    c.pages_sharing = sharing;
    c.ksm_zero_pages = this.zeroNode?.sharers.size ?? 0;
    c.stable_node_chains = chains;
    c.stable_node_dups = dups;
    const rmapItems = this.items.size;
    c.pages_volatile = Math.max(0, rmapItems - shared - sharing - c.pages_unshared - c.ksm_zero_pages);
    c.general_profit = (sharing + c.ksm_zero_pages) * 4096 - rmapItems * RMAP_ITEM_BYTES;
  }
}
