// What the overcommit mechanisms (KSM, the balloon, zswap, swap, the controller) are handed: the host's
// memory-management services. The overcommitted host (host.ts) provides them; the mechanisms see only
// this interface and the peers they are given, and never import the host.
import type { HypervisorCosts } from "../hypervisor/technique.js";
import type { OvercommitConfig } from "./config.js";
import type { PageContent } from "./content.js";
import type { GuestVm } from "./guest.js";
import type { HostFrames } from "./memory.js";

/** Handler-cycle categories beyond technique.ts's: host reclaim work, and waits for the swap device. */
export const CYCLES_OVERCOMMIT = 6;
export const CYCLES_DEVICE_WAIT = 7;

/** `split`: breaking 2M mappings into 4K ones (the controller's action, or for a mechanism needing a 4K page). */
export type Mechanism = "ksm" | "balloon" | "zswap" | "swap" | "guest" | "split";
export const MECHANISMS: readonly Mechanism[] = ["ksm", "balloon", "zswap", "swap", "guest", "split"];
/** What a 2M mapping was split for. */
export type SplitCause = "controller" | "ksm" | "balloon" | "zswap" | "swap";

export interface OvercommitServices {
  readonly oc: OvercommitConfig;
  readonly costs: HypervisorCosts;
  readonly vms: readonly GuestVm[];
  /** Host memory, with its capacity and the contents of its frames. */
  readonly frames: HostFrames;
  /** VM exits and vCPU shootdowns the mechanisms caused, by mechanism. */
  readonly exitsBy: Readonly<Record<Mechanism, number>>;
  readonly invalidationsBy: Readonly<Record<Mechanism, number>>;

  /** Simulated time in cycles, and conversions at overcommit.cpuMHz. */
  now(): number;
  ms(milliseconds: number): number;
  us(microseconds: number): number;
  seconds(cycles?: number): number;

  /** Host work a mechanism did, charged to the machine's clock. */
  charge(mechanism: Mechanism, cycles: number, category?: number): void;
  /** A VM exit a mechanism caused; `transition`: the exit and entry are still to happen. Returns cycles. */
  exit(mechanism: Mechanism, vm: GuestVm, transition: boolean): number;
  /** kvm_flush_remote_tlbs for `vm` after its nested tables changed. Returns cycles. */
  flush(vm: GuestVm, mechanism: Mechanism): number;
  /** Splits the 2M mapping of `gpa`'s region; whether there was one. */
  breakLargePage(vm: GuestVm, gpa: bigint, cause: SplitCause): boolean;
  /** The stale-translation checker, when it is on. */
  check(step: string): void;

  /** A key for (VM, guest-physical page) in the mechanisms' maps, and back. */
  key(vm: GuestVm, gpa: bigint): bigint;
  vmOfKey(key: bigint): GuestVm;
  gpaOfKey(key: bigint): bigint;
  /** The host frame backing a guest page now, or undefined. */
  frameOf(vm: GuestVm, gpa: bigint): bigint | undefined;
  /** What a guest page holds, wherever it is. */
  contentOf(vm: GuestVm, gpa: bigint): PageContent;

  /** The guest's side: what it can give without OOM, and its reclaim under pressure. */
  guestAvailable(vm: GuestVm): number;
  guestReclaim(vm: GuestVm, pages: number, oom: boolean): number;
  /** The content of a file page of `vm` (page cache), or undefined for anonymous memory. */
  fileContent(vm: number, page: bigint): PageContent | undefined;
}
