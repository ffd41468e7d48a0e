// What a run of several VMs reports (a multi-VM workload, or one trace per VM): the machine's statistics plus `memory`, `balloon`, `ksm`, `zswap`,
// `swap`, `controller`, and the exits and invalidations each mechanism caused; the same numbers as a
// table; and the timeline as CSV.

import { count } from "../util/count.js";
import { STATS_TAGS } from "./balloon.js";
import type { OvercommitHost } from "./host.js";
import { MECHANISMS } from "./host.js";

export interface OvercommitReport {
  memvirt: string;
  mode: string;
  source: Record<string, unknown>;
  accesses: number;
  cycles: number;
  cyclesPerAccess: number;
  simulatedSeconds: number;
  tlb: ReturnType<OvercommitHost["machine"]["stats"]>["tlb"];
  walks: number;
  walkRefs: number;
  memory: {
    hostTotalPages: number;
    hostFreePages: number;
    hostUsedPages: number;
    /** Guest pages backed by host memory, per VM (shared KSM pages count in every sharer). */
    usedByVm: number[];
    /** Pages saved, by mechanism. */
    saved: { ksm: number; balloon: number; zswap: number; swap: number };
    zswapPoolPages: number;
    scrubbedFrames: number;
    directReclaims: number;
    /** 2M host pages backing 2M mappings now, and the 2M mappings split, by what they were split for. */
    largePages: number;
    largePagesSplit: Record<string, number>;
  };
  guests: Record<string, number | boolean | string>[];
  ksm?: Record<string, unknown>;
  balloon?: Record<string, unknown>;
  zswap?: Record<string, number>;
  swap?: Record<string, number>;
  controller?: Record<string, unknown>;
  exitsByMechanism: Record<string, number>;
  invalidationsByMechanism: Record<string, number>;
  cyclesByMechanism: Record<string, number>;
  virtualization: { exits: Record<string, number>; exitsTotal: number };
  invariantChecks: number;
  error?: string;
  /** Set when the run was stopped (SIGINT, SIGTERM) between batches; the statistics cover what ran. */
  interrupted?: boolean;
}

export function buildOvercommitReport(
  host: OvercommitHost,
  source: Record<string, unknown>,
  version: string,
  error?: string,
): OvercommitReport {
  const stats = host.machine.stats();
  const exits = host.exitsByReason();
  for (const mechanism of MECHANISMS)
    if (host.exitsBy[mechanism]) exits[`overcommit.${mechanism}`] = host.exitsBy[mechanism];
  const zswapPoolPages = host.frames.poolFrames;
  const report: OvercommitReport = {
    memvirt: version,
    mode: host.config.mode,
    source,
    accesses: stats.accesses,
    cycles: stats.cycles,
    cyclesPerAccess: +(stats.cycles / Math.max(1, stats.accesses)).toFixed(3),
    simulatedSeconds: +host.seconds().toFixed(6),
    tlb: stats.tlb,
    walks: stats.walks,
    walkRefs: stats.walkRefs,
    memory: {
      hostTotalPages: host.frames.capacity,
      hostFreePages: host.frames.freeFrames,
      hostUsedPages: host.frames.used + zswapPoolPages,
      usedByVm: host.vms.map((vm) => Number(vm.vm.backedBytes / 4096n)),
      saved: {
        ksm: host.ksm?.savedPages ?? 0,
        balloon: host.balloon ? host.vms.reduce((sum, vm) => sum + (host.balloon?.actual(vm) ?? 0), 0) : 0,
        zswap: host.zswap ? host.zswap.counters.stored_pages - zswapPoolPages : 0,
        swap: host.swap?.counters.swap_pages ?? 0,
      },
      zswapPoolPages,
      scrubbedFrames: host.frames.scrubbed,
      directReclaims: host.frames.directReclaims,
      largePages: host.frames.largePages,
      largePagesSplit: { ...host.largePagesSplitBy },
    },
    guests: host.vms.map((vm) => ({
      vm: vm.vm.id,
      alive: vm.alive,
      memoryPages: vm.memoryPages,
      usedPages: vm.usedPages,
      freePages: vm.freePages,
      ...vm.stats,
      guestSwapPages: vm.guestSwap.size,
    })),
    exitsByMechanism: { ...host.exitsBy },
    invalidationsByMechanism: { ...host.invalidationsBy },
    cyclesByMechanism: { ...host.cyclesBy },
    virtualization: { exits, exitsTotal: Object.values(exits).reduce((a, b) => a + b, 0) },
    invariantChecks: host.invariantChecks,
  };
  if (host.ksm) {
    report.ksm = {
      ...host.ksm.counters,
      pages_to_scan: host.ksm.pagesToScan,
      cowBreaksByVm: host.ksm.cowByVm.map((c, i) => ({ vm: i + 1, ...c })),
    };
  }
  if (host.balloon) {
    const balloon = host.balloon;
    report.balloon = {
      ...balloon.counters,
      perVm: host.vms.map((vm) => ({
        vm: vm.vm.id,
        num_pages: balloon.target(vm),
        actual: balloon.actual(vm),
        stats: balloon.guestStats(vm),
      })),
      statsTags: [...STATS_TAGS],
    };
  }
  if (host.zswap) report.zswap = { ...host.zswap.counters };
  if (host.swap) report.swap = { ...host.swap.counters };
  if (host.controller) {
    const c = host.controller;
    report.controller = {
      policy: host.oc.controller.policy,
      state: c.state,
      secondsInState: Object.fromEntries(Object.entries(c.secondsIn).map(([s, v]) => [s, +v.toFixed(6)])),
      transitions: c.transitions.length,
      transitionLog: c.transitions,
      blockedSteps: c.blockedSteps,
      largePagesBroken: c.largePagesBroken,
      largePageInvalidations: c.largePageInvalidations,
      largePageExits: c.largePageExits,
      minFreePages: Math.round(c.minFreePages),
    };
  }
  if (error) report.error = error;
  return report;
}

export function formatOvercommitReport(r: OvercommitReport): string {
  const traces =
    r.source.kind === "trace" ? (r.source.traces as { file: string; format: string }[]) : undefined;
  const what = traces
    ? ["traces", traces.map((trace) => `${trace.file} (${trace.format})`).join(", ")]
    : ["workload", String(r.source.name)];
  const rows: [string, string][] = [
    [what[0], `${what[1]} (${r.guests.length} VMs), ${r.simulatedSeconds.toFixed(3)} s simulated`],
    ["accesses", `${count(r.accesses)}, ${count(r.cycles)} cycles (${r.cyclesPerAccess} per access)`],
    [
      "host memory",
      `${count(r.memory.hostTotalPages)} pages: ${count(r.memory.hostUsedPages)} used, ${count(r.memory.hostFreePages)} free`,
    ],
    ["used by VM", r.memory.usedByVm.map(count).join(", ")],
    [
      "saved",
      `KSM ${count(r.memory.saved.ksm)}, balloon ${count(r.memory.saved.balloon)}, zswap ${count(r.memory.saved.zswap)}, swap ${count(r.memory.saved.swap)} pages`,
    ],
  ];
  if (r.ksm)
    rows.push([
      "ksm",
      `pages_shared ${count(r.ksm.pages_shared as number)}, pages_sharing ${count(r.ksm.pages_sharing as number)}, pages_unshared ${count(r.ksm.pages_unshared as number)}, pages_volatile ${count(r.ksm.pages_volatile as number)}, full_scans ${r.ksm.full_scans}, cow_ksm ${count(r.ksm.cow_ksm as number)}, general_profit ${count(r.ksm.general_profit as number)}`,
    ]);
  if (r.balloon)
    rows.push([
      "balloon",
      `${count(r.balloon.pages_inflated as number)} pages inflated in ${count(r.balloon.inflate_messages as number)} messages, ${count(r.balloon.pages_deflated as number)} deflated`,
    ]);
  if (r.zswap)
    rows.push([
      "zswap",
      `stored_pages ${count(r.zswap.stored_pages)} (${count(r.zswap.same_filled_pages)} same-filled), pool_total_size ${count(r.zswap.pool_total_size)}, reject_compress_poor ${count(r.zswap.reject_compress_poor)}, pool_limit_hit ${r.zswap.pool_limit_hit}, written_back_pages ${count(r.zswap.written_back_pages)}`,
    ]);
  if (r.swap)
    rows.push([
      "swap",
      `${count(r.swap.swap_pages)} pages on swap, pswpout ${count(r.swap.pswpout)}, pswpin ${count(r.swap.pswpin)} (readahead ${count(r.swap.readahead_pages)}), double paging ${count(r.swap.double_paging)}`,
    ]);
  if (r.controller)
    rows.push([
      "controller",
      `${r.controller.policy}, now ${r.controller.state}, ${r.controller.transitions} transitions; seconds in state ${Object.entries(
        r.controller.secondsInState as Record<string, number>,
      )
        .map(([s, v]) => `${s} ${v.toFixed(2)}`)
        .join(
          ", ",
        )}${r.controller.largePagesBroken ? `; ${count(r.controller.largePagesBroken as number)} large pages broken` : ""}`,
    ]);
  const by = (record: Record<string, number>) =>
    Object.entries(record)
      .filter(([, n]) => n > 0)
      .map(([m, n]) => `${m} ${count(n)}`)
      .join(", ") || "-";
  rows.push(["exits by mechanism", by(r.exitsByMechanism)]);
  rows.push(["shootdowns by mechanism", by(r.invalidationsByMechanism)]);
  rows.push(["cycles by mechanism", by(r.cyclesByMechanism)]);
  rows.push([
    "guests",
    r.guests
      .map(
        (g) =>
          `VM ${g.vm}: ${g.alive ? "" : "OOM-killed, "}major ${g.majorFaults}, swap out ${g.swapOut}, cache dropped ${g.pageCacheDropped}`,
      )
      .join("; "),
  ]);
  const width = Math.max(...rows.map(([label]) => label.length));
  let text = rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`).join("\n");
  if (r.error) text += `\n  stopped early: ${r.error}`;
  if (r.interrupted) text += "\n  stopped early: interrupted; the statistics cover the records that ran";
  return text;
}

export function timelineCsv(host: OvercommitHost): string {
  const vms = host.vms.map((vm) => `vm${vm.vm.id}_pages`);
  const header = [
    "seconds",
    "host_free_pages",
    "host_used_pages",
    ...vms,
    "controller_state",
    "ksm_pages_sharing",
    "balloon_actual",
    "zswap_stored_pages",
    "swap_pages",
    "mechanism_exits",
    "mechanism_shootdowns",
  ];
  const lines = host.timeline.map((s) =>
    [
      s.seconds,
      s.hostFree,
      s.hostUsed,
      ...s.usedByVm,
      s.controllerState,
      s.ksmSharing,
      s.balloonActual,
      s.zswapStored,
      s.swapPages,
      s.exits,
      s.invalidations,
    ].join(","),
  );
  return `${header.join(",")}\n${lines.join("\n")}\n`;
}
