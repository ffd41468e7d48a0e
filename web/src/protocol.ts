// Messages between the page and the worker that runs the core (structured clones: BigInt and Blob
// cross as they are, a File without copying its bytes).
import type { CompareResult, RunReport, SeedRow, WalkExplanation } from "memvirt";
import type { WorkloadFlags } from "../../src/cli/options.js";

/** The CLI's workload flags as text (`--records 1000` is { records: "1000" }), seed included. */
export type WorkloadChoice = WorkloadFlags;

export type SourceChoice =
  | { kind: "workload"; workload: WorkloadChoice }
  | { kind: "trace"; name: string; data: Blob; format: string };

export type Request =
  | { type: "run"; configText: string; source: SourceChoice }
  | { type: "walk"; cpu: number; la: string; kind: number; cold: boolean }
  | { type: "compare"; configText: string; workload: WorkloadChoice }
  | { type: "seed-table" };

/** An access of the run, offered to the Walk view. */
export interface RecentAccess {
  cpu: number;
  la: string;
  kind: number;
}

/** A multi-VM run's memory timeline (the columns of `memvirt run --timeline`). */
export type Timeline = { header: string[]; rows: string[][] };

export interface RunDone {
  type: "run-done";
  /** The object `memvirt run --json` prints (the overcommit report for multi-VM workloads). */
  report: RunReport | Record<string, unknown>;
  multiVm: boolean;
  /** Download bodies, byte for byte what the CLI writes. */
  files: { name: string; type: string; text: string }[];
  recent: RecentAccess[];
  cpus: number;
  timeline?: Timeline;
  seconds: number;
}

export type Reply =
  | { type: "progress"; fraction: number | null; text: string }
  | RunDone
  | { type: "walk-done"; walk: WalkExplanation }
  | { type: "compare-done"; result: CompareResult; html: string; seconds: number }
  | { type: "seed-table-done"; rows: SeedRow[]; text: string; json: string; seconds: number }
  | { type: "error"; message: string; report?: unknown; files?: RunDone["files"]; multiVm?: boolean };
