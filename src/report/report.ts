// What a run reports: one JSON object (the outside contract: keep key names stable, add rather than
// rename) and a table for people built from the same object.
import { configToJson, type ResolvedConfig } from "../config/config.js";
import type { Stats } from "../core/types.js";
import { type IommuReport, iommuRows } from "../iommu/report.js";
import type { Simulation } from "../runner/simulation.js";
import { count } from "../util/count.js";
import { VERSION } from "../version.js";

export interface RunSource {
  kind: "trace" | "workload";
  [key: string]: unknown;
}

export interface RunReport extends Stats {
  memvirt: string;
  mode: string;
  source: RunSource;
  guest: { levels: number; pageSize: string; frames: string };
  cyclesPerAccess: number;
  refsPerWalk: number;
  exits: { pageFault: number; generalProtection: number; total: number };
  /** #PF exits by error-code bit (P, W, U, RSVD, ID, PK, SS). */
  pageFaultErrorBits: Record<string, number>;
  guestOs: {
    minorFaults: number;
    segvs: number;
    tablesAllocated: number;
    contextSwitches: number;
    shootdowns: number;
    pagesMapped: Record<string, number>;
  };
  physicalMemory: { backedFrames: number };
  /** Cycles by who spent them, in every mode: translation (the hardware's TLB probes, walks and
   *  A/D updates) and each kind of software handler. Sums to `cycles`. */
  cyclesByWho: {
    translation: number;
    guestKernel: number;
    vmExits: number;
    tdp: number;
    shadow: number;
    hypercalls: number;
    emulation: number;
  };
  /** Present when the guest runs in a VM (mode ept, npt, shadow or pv). */
  virtualization?: {
    technique: string;
    host: { levels: number; pageSize: string };
    /** walkRefs split by dimension: the guest's own reads and the nested dimension's. */
    walkRefsByDimension: { guest: number; nested: number };
    faultedWalkRefsByDimension: { guest: number; nested: number };
    nestedWalks: number;
    nestedTlb: { hits: number; misses: number };
    nestedPsc: Record<string, { hits: number; misses: number }>;
    /** VM exits by reason, as the hypervisor took them. */
    exits: Record<string, number>;
    exitsTotal: number;
    /** The technique's own counters (KVM's names where KVM has them). */
    hypervisor: Record<string, number>;
    /**
     * Page-modification logging (hypervisor.dirtyLog "pml"): what the CPUs logged and what the writes
     * cost them, the PML-full exits and their round trips, and the hypervisor draining the logs.
     */
    pml?: {
      logged: number;
      logCycles: number;
      fullExits: number;
      exitCycles: number;
      drained: number;
      drainCycles: number;
    };
    /** Cycles by who spent them. */
    cycles: {
      guestKernel: number;
      vmExits: number;
      tdp: number;
      shadow: number;
      hypercalls: number;
      emulation: number;
    };
  };
  /** Present when the guest kernel made address-space system calls (the churn workloads). */
  syscalls?: {
    /** Calls by name: mmap, munmap, mprotect, madvise, fork, exec, exit. */
    calls: Record<string, number>;
    pagesUnmapped: number;
    tablesFreed: number;
    /** Write faults on pages fork left read-only, and those that copied the page. */
    cowFaults: number;
    cowCopies: number;
  };
  /** Present when the guest kernel flushed TLBs after changing its page tables. */
  shootdowns?: {
    /** Flushes the kernel sent to other CPUs running the address space, and the CPUs they reached. */
    shootdowns: number;
    targets: number;
    /** The flushes on the CPUs themselves: single pages (INVLPG) and whole address spaces (CR3 reloads). */
    invlpg: number;
    fullFlushes: number;
    /** Switches that flushed because the CPU had missed a flush while it ran something else. */
    deferredFlushes: number;
    /** What the shootdowns cost the technique: IPIs, their exits (exits), posted interrupts, hypercalls. */
    technique: Record<string, number>;
  };
  /** Present for the dma-* workloads: the IOMMU, its driver and the devices. */
  iommu?: IommuReport;
  /** Set when the run stopped early on bad input; the statistics cover the records before it. */
  error?: string;
  /** Set when the run was stopped (SIGINT, SIGTERM) between batches; the statistics cover what ran. */
  interrupted?: boolean;
}

export { VERSION } from "../version.js";

/** `cyclesByWho`'s keys in the order the reports show them, with their labels. */
export const CYCLES_BY_WHO: [keyof RunReport["cyclesByWho"], string][] = [
  ["translation", "translation"],
  ["guestKernel", "guest kernel"],
  ["vmExits", "VM exits"],
  ["tdp", "TDP MMU"],
  ["shadow", "shadow MMU"],
  ["hypercalls", "hypercalls"],
  ["emulation", "emulation"],
];

// The effective config of a report or a comparison, for the pages that show it and the JSON the CLI
// prints. It is kept beside the object rather than in it (a sweep row's report, the CSV of a run, stay
// as they were); a report read back from JSON carries its own `config` key, and that is read instead.
const configs = new WeakMap<object, ResolvedConfig>();

export function attachConfig<T extends object>(target: T, config: ResolvedConfig): T {
  configs.set(target, config);
  return target;
}

/** The config that produced `target`, as JSON that `--config` reads back (config.configToJson). */
export function effectiveConfig(target: object): unknown {
  const own = (target as { config?: unknown }).config;
  if (own !== undefined) return own;
  const config = configs.get(target);
  return config && configToJson(config);
}

const round = (value: number, digits = 3) => (Number.isFinite(value) ? +value.toFixed(digits) : 0);

export function buildReport(simulation: Simulation, source: RunSource, error?: string): RunReport {
  const stats = simulation.stats();
  const guestStats = simulation.os.stats;
  const report: RunReport = {
    memvirt: VERSION,
    mode: simulation.config.mode,
    source,
    guest: {
      levels: simulation.config.guest.levels,
      pageSize: simulation.config.guest.pageSize,
      frames: simulation.config.guest.frames,
    },
    ...stats,
    cyclesPerAccess: round(stats.cycles / Math.max(1, stats.accesses)),
    refsPerWalk: round(stats.walkRefs / Math.max(1, stats.walks)),
    exits: {
      pageFault: simulation.exits.pageFault,
      generalProtection: simulation.exits.generalProtection,
      total: simulation.exits.pageFault + simulation.exits.generalProtection,
    },
    pageFaultErrorBits: { ...simulation.exits.pageFaultsByBit },
    guestOs: {
      minorFaults: guestStats.minorFaults,
      segvs: guestStats.segvs,
      tablesAllocated: guestStats.tablesAllocated,
      contextSwitches: guestStats.contextSwitches,
      shootdowns: guestStats.shootdowns,
      pagesMapped: { ...guestStats.pagesMapped },
    },
    physicalMemory: { backedFrames: simulation.machine.backedFrames() },
    cyclesByWho: cyclesByWho(simulation, stats.cycles),
  };
  const technique = simulation.technique;
  if (technique) {
    const nested = simulation.machine.nestedStats();
    const machine = simulation.machine;
    const exits = technique.exits();
    report.virtualization = {
      technique: technique.name,
      host: { levels: simulation.config.host.levels, pageSize: simulation.config.host.pageSize },
      walkRefsByDimension: { guest: stats.walkRefs - nested.nestedRefs, nested: nested.nestedRefs },
      faultedWalkRefsByDimension: {
        guest: stats.faultedWalkRefs - nested.faultedNestedRefs,
        nested: nested.faultedNestedRefs,
      },
      nestedWalks: nested.nestedWalks,
      nestedTlb: nested.nestedTlb,
      nestedPsc: nested.nestedPsc,
      exits,
      exitsTotal: Object.values(exits).reduce((sum, n) => sum + n, 0),
      hypervisor: technique.stats(),
      cycles: {
        guestKernel: machine.handlerCycles(0),
        vmExits: machine.handlerCycles(1),
        tdp: machine.handlerCycles(2),
        shadow: machine.handlerCycles(3),
        hypercalls: machine.handlerCycles(4),
        emulation: machine.handlerCycles(5),
      },
    };
  }
  addChurn(report, simulation);
  if (report.virtualization && simulation.config.hypervisor.dirtyLog === "pml") {
    const { costs } = simulation.config.hypervisor;
    const counters = report.virtualization.hypervisor;
    const logging = simulation.machine.nestedStats().pml;
    report.virtualization.pml = {
      logged: logging.logged,
      logCycles: logging.cycles,
      fullExits: counters.pml_full_exits,
      exitCycles: counters.pml_full_exits * (costs.exitByReason?.pmlFull ?? costs.exit),
      drained: counters.pml_drained,
      drainCycles: counters.pml_drain_cycles,
    };
  }
  if (error) report.error = error;
  return attachConfig(report, simulation.config);
}

/** The syscalls and shootdowns sections, when the guest kernel changed its page tables. */
function addChurn(report: RunReport, simulation: Simulation): void {
  const stats = simulation.os.stats;
  if (Object.values(stats.syscalls).some((n) => n > 0))
    report.syscalls = {
      calls: { ...stats.syscalls },
      pagesUnmapped: stats.pagesUnmapped,
      tablesFreed: stats.tablesFreed,
      cowFaults: stats.cowFaults,
      cowCopies: stats.cowCopies,
    };
  const flushes = stats.tlbFlushes.invlpg + stats.tlbFlushes.full + stats.deferredFlushes + stats.shootdowns;
  if (flushes > 0)
    report.shootdowns = {
      shootdowns: stats.shootdowns,
      targets: stats.shootdownTargets,
      invlpg: stats.tlbFlushes.invlpg,
      fullFlushes: stats.tlbFlushes.full,
      deferredFlushes: stats.deferredFlushes,
      technique: simulation.guest.technique.shootdownStats?.() ?? {},
    };
}

function cyclesByWho(simulation: Simulation, total: number): RunReport["cyclesByWho"] {
  const machine = simulation.machine;
  const handlers = {
    guestKernel: machine.handlerCycles(0),
    vmExits: machine.handlerCycles(1),
    tdp: machine.handlerCycles(2),
    shadow: machine.handlerCycles(3),
    hypercalls: machine.handlerCycles(4),
    emulation: machine.handlerCycles(5),
  };
  const software = Object.values(handlers).reduce((sum, n) => sum + n, 0);
  return { translation: total - software, ...handlers };
}

const percent = (part: number, whole: number) =>
  whole === 0 ? "-" : `${((100 * part) / whole).toFixed(2)}%`;

/** Page-modification logging in one line, for the text and HTML reports. */
function pmlText(pml: NonNullable<NonNullable<RunReport["virtualization"]>["pml"]>): string {
  return `${count(pml.logged)} GPAs logged (${count(pml.logCycles)} cycles), ${count(pml.fullExits)} PML-full exits (${count(pml.exitCycles)} cycles), ${count(pml.drained)} entries drained (${count(pml.drainCycles)} cycles)`;
}

/** Two-column table with aligned values. */
export function formatRows(rows: [string, string][]): string {
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`).join("\n");
}

export function formatTable(report: RunReport): string {
  const tlbRow = (name: "l1d" | "l1i" | "l2"): [string, string] => {
    const { hits, misses } = report.tlb[name];
    return [
      `TLB ${name}`,
      `${count(hits)} hits, ${count(misses)} misses (miss rate ${percent(misses, hits + misses)})`,
    ];
  };
  const pscRow = (name: "pml5" | "pml4" | "pdpte" | "pde"): [string, string] => {
    const { hits, misses } = report.psc[name];
    return [`PSC ${name}`, `${count(hits)} hits, ${count(misses)} misses`];
  };
  const sourceText =
    report.source.kind === "trace"
      ? `trace ${report.source.file} (${report.source.format})`
      : `workload ${report.source.name}`;
  const rows: [string, string][] = [
    ["source", sourceText],
    ["mode", `${report.mode}, guest ${report.guest.levels}-level paging with ${report.guest.pageSize} pages`],
    ["accesses", count(report.accesses)],
    ["cycles", `${count(report.cycles)} (${report.cyclesPerAccess} per access)`],
    tlbRow("l1d"),
    tlbRow("l1i"),
    tlbRow("l2"),
    [
      "page walks",
      `${count(report.walks)} (${count(report.walkRefs)} references, ${report.refsPerWalk} per walk)`,
    ],
    ["faulted walks", `${count(report.faultedWalks)} (${count(report.faultedWalkRefs)} references)`],
    pscRow("pml4"),
    pscRow("pdpte"),
    pscRow("pde"),
    [
      "walk refs served by",
      `L1 ${count(report.cache.l1.hits)}, L2 ${count(report.cache.l2.hits)}, LLC ${count(report.cache.llc.hits)}, DRAM ${count(report.cache.dram)}`,
    ],
    ["A/D updates", `${count(report.adUpdates)} (${count(report.dirtyAssists)} D-bit assists)`],
    [
      "faults",
      `${count(report.exits.pageFault)} #PF (not present ${count(report.faults.notPresent)}, protection ${count(report.faults.protection)}, reserved ${count(report.faults.reserved)}), ${count(report.faults.gp)} #GP`,
    ],
    [
      "guest kernel",
      `${count(report.guestOs.minorFaults)} demand faults, ${count(report.guestOs.tablesAllocated)} page tables, ${count(report.guestOs.segvs)} SIGSEGV`,
    ],
  ];
  if (report.guest.levels === 5) rows.splice(9, 0, pscRow("pml5"));
  const v = report.virtualization;
  if (v) {
    rows.splice(1, 1, [
      "mode",
      `${report.mode}: guest ${report.guest.levels}-level paging with ${report.guest.pageSize} pages on a ${v.host.levels}-level host with ${v.host.pageSize} backing`,
    ]);
    rows.push(
      [
        "walk refs by dimension",
        `guest ${count(v.walkRefsByDimension.guest)}, nested ${count(v.walkRefsByDimension.nested)}`,
      ],
      [
        "nested TLB",
        `${count(v.nestedTlb.hits)} hits, ${count(v.nestedTlb.misses)} misses (${count(v.nestedWalks)} nested walks)`,
      ],
      [
        "VM exits",
        `${count(v.exitsTotal)}${
          v.exitsTotal
            ? ` (${Object.entries(v.exits)
                .map(([reason, n]) => `${reason} ${count(n)}`)
                .join(", ")})`
            : ""
        }`,
      ],
      [
        "hypervisor",
        Object.entries(v.hypervisor)
          .filter(([, n]) => n !== 0)
          .map(([name, n]) => `${name} ${count(n)}`)
          .join(", ") || "-",
      ],
      [
        "cycles by who",
        `guest kernel ${count(v.cycles.guestKernel)}, exits ${count(v.cycles.vmExits)}, TDP ${count(v.cycles.tdp)}, shadow ${count(v.cycles.shadow)}, hypercalls ${count(v.cycles.hypercalls)}, emulation ${count(v.cycles.emulation)}`,
      ],
    );
  }
  if (v?.pml) rows.push(["page-modification log", pmlText(v.pml)]);
  if (report.syscalls) {
    const sc = report.syscalls;
    rows.push(
      [
        "system calls",
        Object.entries(sc.calls)
          .filter(([, n]) => n > 0)
          .map(([name, n]) => `${name} ${count(n)}`)
          .join(", "),
      ],
      [
        "page-table changes",
        `${count(sc.pagesUnmapped)} pages unmapped, ${count(sc.tablesFreed)} page tables freed, ${count(sc.cowFaults)} copy-on-write faults (${count(sc.cowCopies)} copies)`,
      ],
    );
  }
  if (report.shootdowns) {
    const sd = report.shootdowns;
    const paid = Object.entries(sd.technique)
      .map(([name, n]) => `${name} ${count(n)}`)
      .join(", ");
    rows.push(
      ["TLB shootdowns", `${count(sd.shootdowns)} to ${count(sd.targets)} CPUs${paid ? ` (${paid})` : ""}`],
      [
        "TLB flushes",
        `${count(sd.invlpg)} INVLPG, ${count(sd.fullFlushes)} whole address spaces, ${count(sd.deferredFlushes)} at a later switch`,
      ],
    );
  }
  if (report.iommu) rows.push(...iommuRows(report.iommu));
  let text = formatRows(rows);
  if (report.error) text += `\n  stopped early: ${report.error}`;
  if (report.interrupted) text += "\n  stopped early: interrupted; the statistics cover the records that ran";
  return text;
}
