// The overcommit controller: every intervalMs of simulated time it reads the host's free memory and
// applies a policy.
// - vsphere: the vSphere 6 memory states, relative to minFree. Each threshold is where its action
//   starts as free memory falls: below high (400 %) large pages are broken (with host.pageSize "2M" the
//   host backs each region's first touch with a 2M page; each step splits up to reclaimPagesPerStep /
//   512 of them into 4K mappings so KSM, balloons and reclaim can take their pages one by one; the
//   split itself frees nothing), below clear (100 %) KSM runs, below soft (64 %)
//   balloons inflate, below hard (32 %) pages are compressed and swapped, below low (16 %) allocations
//   block until reclaim has caught up. Falling into a state is immediate; climbing back out needs free
//   memory hysteresisPercent above the threshold, so the state does not flap.
// - mom: oVirt MoM's defaults: under pressure (free below 20 %) KSM runs with pages_to_scan raised by
//   300 (at most 1250) and balloons take at most 5 % of each VM's memory per step; otherwise
//   pages_to_scan falls by 50 (at least 64) and balloons give 5 % back; below 5 % free (critical) the
//   host also compresses and swaps. MoM has no large-page action: a mechanism that needs a 4K page of
//   a 2M mapping splits it (OvercommitHost.breakLargePage), under either policy.
import type { HostTimer } from "../host/hooks.js";
import type { Balloon } from "./balloon.js";
import type { Ksm } from "./ksm.js";
import type { OvercommitServices } from "./services.js";
import type { HostSwap, Zswap } from "./zswap.js";

/** The mechanisms the controller drives. */
export interface ControllerPeers {
  ksm?: Pick<Ksm, "running" | "pagesToScan">;
  balloon?: Pick<Balloon, "actual" | "target" | "setTarget">;
  zswap?: Pick<Zswap, "reclaim">;
  swap?: Pick<HostSwap, "reclaim">;
}

export const VSPHERE_STATES = ["high", "clear", "soft", "hard", "low"] as const;
export const MOM_STATES = ["normal", "pressure", "critical"] as const;
export type ControllerState = (typeof VSPHERE_STATES)[number] | (typeof MOM_STATES)[number];

export interface Transition {
  seconds: number;
  from: ControllerState;
  to: ControllerState;
  /** Free host memory the decision was made on, in pages and in percent of minFree. */
  freePages: number;
  freeRatio: number;
}

export class Controller implements HostTimer {
  nextAt: number;
  state: ControllerState;
  readonly secondsIn: Record<string, number> = {};
  readonly transitions: Transition[] = [];
  blockedSteps = 0;
  /** The break-large-pages action: 2M mappings split, and the shootdowns and exits the splits caused. */
  largePagesBroken = 0;
  largePageInvalidations = 0;
  largePageExits = 0;
  private lastAt = 0;
  /** The VM whose 2M mappings the break action splits next (round robin). */
  private breakCursor = 0;

  constructor(
    private readonly host: OvercommitServices,
    private readonly peers: ControllerPeers,
  ) {
    this.nextAt = 0;
    this.state = host.oc.controller.policy === "mom" ? "normal" : "high";
    const states: readonly string[] = host.oc.controller.policy === "mom" ? MOM_STATES : VSPHERE_STATES;
    for (const s of states) this.secondsIn[s] = 0;
    if (peers.ksm) peers.ksm.running = false;
  }

  get period(): number {
    return this.host.ms(this.host.oc.controller.intervalMs);
  }

  fire(): void {
    this.step();
  }

  get minFreePages(): number {
    return (this.host.frames.capacity * this.host.oc.controller.minFreePercent) / 100;
  }

  /** Free memory in percent of minFree. */
  get freeRatio(): number {
    return (100 * this.host.frames.freeFrames) / Math.max(1, this.minFreePages);
  }

  /** The vSphere state for `ratio` (percent of minFree), starting from `current`, with hysteresis. */
  static vsphereState(
    ratio: number,
    current: ControllerState,
    thresholds: { clear: number; soft: number; hard: number; low: number },
    hysteresisPercent: number,
  ): ControllerState {
    // The boundary above state k (between k-1 and k).
    const boundary = [
      Number.POSITIVE_INFINITY,
      thresholds.clear,
      thresholds.soft,
      thresholds.hard,
      thresholds.low,
    ];
    let raw = 0;
    while (raw < 4 && ratio < boundary[raw + 1]) raw++;
    let state = Math.max(0, VSPHERE_STATES.indexOf(current as (typeof VSPHERE_STATES)[number]));
    if (raw > state) return VSPHERE_STATES[raw];
    while (state > raw && ratio >= boundary[state] * (1 + hysteresisPercent / 100)) state--;
    return VSPHERE_STATES[state];
  }

  step(): void {
    const host = this.host;
    const now = host.now();
    this.secondsIn[this.state] += host.seconds(now - this.lastAt);
    this.lastAt = now;
    this.nextAt += host.ms(host.oc.controller.intervalMs);
    const freePages = host.frames.freeFrames;
    const freeRatio = this.freeRatio;
    const next = host.oc.controller.policy === "mom" ? this.momStep() : this.vsphereStep();
    if (next !== this.state) {
      this.transitions.push({
        seconds: +host.seconds(now).toFixed(6),
        from: this.state,
        to: next,
        freePages,
        freeRatio: +freeRatio.toFixed(3),
      });
      this.state = next;
    }
    host.check("controller");
  }

  /** Pages to reclaim to bring free memory back to minFree (clear), capped per step. */
  private deficit(targetPercentOfMinFree = 100): number {
    const want = (this.minFreePages * targetPercentOfMinFree) / 100 - this.host.frames.freeFrames;
    return Math.max(0, Math.min(Math.ceil(want), this.host.oc.controller.reclaimPagesPerStep));
  }

  private vsphereStep(): ControllerState {
    const host = this.host;
    const c = host.oc.controller;
    const state = Controller.vsphereState(this.freeRatio, this.state, c.thresholds, c.hysteresisPercent);
    const level = VSPHERE_STATES.indexOf(state as (typeof VSPHERE_STATES)[number]);
    if (this.freeRatio < c.thresholds.high) this.breakLargePages(Math.ceil(c.reclaimPagesPerStep / 512));
    const { ksm, balloon } = this.peers;
    if (ksm) ksm.running = level >= 1;
    const alive = host.vms.filter((vm) => vm.alive);
    if (level >= 2 && balloon && alive.length > 0) {
      // Soft: inflate every balloon by an equal share of what is missing.
      const share = Math.ceil(this.deficit(c.thresholds.clear) / alive.length);
      for (const vm of alive) {
        // No more than the guest can give without OOM-killing (its available memory).
        const step = Math.min(share, host.guestAvailable(vm));
        if (step > 0) balloon.setTarget(vm, balloon.actual(vm) + step);
      }
    } else if (level === 0 && balloon) {
      // Plenty of memory again: give ballooned memory back, a step at a time.
      for (const vm of host.vms) {
        const actual = balloon.actual(vm);
        if (actual > 0) balloon.setTarget(vm, Math.max(0, actual - c.reclaimPagesPerStep));
      }
    }
    if (level >= 3) this.compressAndSwap(this.deficit(c.thresholds.soft));
    if (level >= 4) {
      // Low: allocations wait until reclaim has brought free memory back above the low threshold.
      this.blockedSteps++;
      const missing = Math.ceil((this.minFreePages * c.thresholds.low) / 100 - host.frames.freeFrames);
      if (missing > 0) this.compressAndSwap(missing);
    }
    return state;
  }

  /**
   * Below the high threshold: split up to `count` 2M mappings, taking the VMs in turn and each VM's
   * oldest 2M region first. Splitting frees no memory; it lets the other actions work on 4K pages.
   */
  private breakLargePages(count: number): void {
    const host = this.host;
    const n = host.vms.length;
    const exits = host.exitsBy.split;
    const invalidations = host.invalidationsBy.split;
    let broken = 0;
    for (let tried = 0; broken < count && tried < n; ) {
      const vm = host.vms[this.breakCursor % n];
      this.breakCursor = (this.breakCursor + 1) % n;
      const first = vm.vm.largeRegions().next();
      if (!first.done && host.breakLargePage(vm, first.value[0], "controller")) {
        broken++;
        tried = 0;
        host.check("large page split");
      } else {
        tried++;
      }
    }
    this.largePagesBroken += broken;
    this.largePageExits += host.exitsBy.split - exits;
    this.largePageInvalidations += host.invalidationsBy.split - invalidations;
  }

  private compressAndSwap(pages: number): void {
    const { zswap, swap } = this.peers;
    if (pages <= 0) return;
    let freed = zswap ? zswap.reclaim(pages, false) : 0;
    if (freed < pages && swap) freed += swap.reclaim(pages - freed, false);
  }

  private momStep(): ControllerState {
    const host = this.host;
    const mom = host.oc.controller.mom;
    const freePercent = (100 * host.frames.freeFrames) / host.frames.capacity;
    const state: ControllerState =
      freePercent < mom.criticalPercent
        ? "critical"
        : freePercent < mom.pressurePercent
          ? "pressure"
          : "normal";
    const { ksm, balloon } = this.peers;
    if (ksm) {
      if (state !== "normal") {
        ksm.running = true;
        ksm.pagesToScan = Math.min(1250, ksm.pagesToScan + 300);
      } else {
        ksm.pagesToScan = Math.max(64, ksm.pagesToScan - 50);
        if (ksm.pagesToScan === 64) ksm.running = false;
      }
    }
    if (balloon) {
      for (const vm of host.vms) {
        if (!vm.alive) continue;
        const step = Math.floor((vm.memoryPages * mom.balloonStepPercent) / 100);
        const target = balloon.target(vm);
        if (state !== "normal")
          balloon.setTarget(vm, balloon.actual(vm) + Math.min(step, host.guestAvailable(vm)));
        else if (target > 0) balloon.setTarget(vm, Math.max(0, target - step));
      }
    }
    if (state === "critical") {
      const want = Math.ceil((host.frames.capacity * mom.criticalPercent) / 100 - host.frames.freeFrames);
      this.compressAndSwap(Math.min(want, host.oc.controller.reclaimPagesPerStep));
    }
    return state;
  }

  /** Closes the time-in-state accounting at the end of the run. */
  finish(): void {
    const now = this.host.now();
    this.secondsIn[this.state] += this.host.seconds(now - this.lastAt);
    this.lastAt = now;
  }
}
