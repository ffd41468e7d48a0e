/**
 * memvirt's public API, the same on every host: Node, a browser page, a Web Worker, a bundled
 * application. Nothing it reaches imports a Node module; in Node, `import ... from "memvirt"` also has
 * what reads and writes files (see memvirt (Node)). Anything not exported here is internal.
 *
 * What it holds: the core (`Machine`, its configuration types, `loadCore`); the configuration
 * (`defaultConfig`, `parseConfigText`, `resolveConfig`); `Host` (machine, host memory, guests and
 * the one loop, with its hook table) and `Simulation` (the host with one guest under the configured
 * technique); traces given as bytes, a Blob or a stream, plain, gzip or xz
 * (`replayTraceData`, `readTraceData`); workloads (synthetic, multi-VM with overcommit, DMA through the
 * IOMMU); comparisons; reports (`buildReport`, `formatTable`, `formatCsv`, `renderHtmlReport`).
 *
 * @module memvirt
 */

export {
  CHURN_COLUMNS,
  COMPARE_COLUMNS,
  type CompareResult,
  type CompareRow,
  compareCells,
  compareTable,
  formatCompare,
  runCompare,
} from "./cli/compare.js";
export {
  ConfigError,
  configToJson,
  defaultConfig,
  type FramePolicy,
  type GuestConfig,
  type HostConfig,
  type HypervisorConfig,
  MODES,
  type Mode,
  parseBytes,
  parseConfigText,
  type ResolvedConfig,
  resolveConfig,
} from "./config/config.js";
export { MemvirtError } from "./core/errors.js";
export {
  BATCH_RESULT,
  type CoreState,
  EXIT_REASONS,
  type ExitReason,
  type ExitRecord,
  Machine,
  type MachineOptions,
  NESTED_EXECUTE,
  NESTED_READ,
  NESTED_WRITE,
  type NestedMode,
  RECORD_CAPACITY,
  RECORD_SIZE,
  type TracedReference,
  type VmEntry,
} from "./core/machine.js";
export {
  AccessKind,
  type AccessResult,
  type CacheConfig,
  type CacheLevelConfig,
  CR0_PG,
  CR0_WP,
  CR4_CET,
  CR4_LA57,
  CR4_PCIDE,
  CR4_PGE,
  CR4_PKE,
  CR4_PKS,
  CR4_SMAP,
  CR4_SMEP,
  EFER_LMA,
  EFER_NXE,
  FaultType,
  IMPLICIT,
  type MachineConfig,
  PAGE_SHIFT,
  PAGE_SIZES,
  type PageSize,
  PFEC,
  type Policy,
  type PscConfig,
  type Regs,
  RFLAGS_AC,
  type SetAssocConfig,
  type Stats,
  type TlbArrayConfig,
  type TlbLevelConfig,
} from "./core/types.js";
export {
  type CellSource,
  decodeEptEntry,
  decodeX86Entry,
  type EntryBit,
  explainWalk,
  type FaultBit,
  type WalkCell,
  type WalkExplanation,
} from "./core/walk-trace.js";
export {
  type BuildName,
  type CoreExports,
  instantiateCoreAsync,
  loadCore,
  packagedWasmUrl,
  type WasmSource,
} from "./core/wasm.js";
export type {
  DmaSource,
  DmaUnit,
  GuestKernel,
  HostTimer,
  NestedFaultHook,
  RecordsHook,
} from "./host/hooks.js";
export { type Guest, type GuestPlan, Host, type HostOptions } from "./host/host.js";
export type {
  NestedTables,
  PagingTechnique,
  TechniqueModule,
  TechniqueServices,
  TechniqueSettings,
  VirtualizationTechnique,
  VmServices,
} from "./hypervisor/technique.js";
export { TECHNIQUES } from "./hypervisor/techniques.js";
export type { IommuConfig } from "./iommu/config.js";
export { IommuDriver, type IommuMode } from "./iommu/driver.js";
export { type DmaRequest, type DmaResult, Iommu, type IommuStats } from "./iommu/hardware.js";
export { AmdDeviceTable, IoPageTable, VtdRootTable } from "./iommu/tables.js";
export {
  DMA_WORKLOADS,
  type DmaWorkloadName,
  type DmaWorkloadSpec,
  type IommuReport,
  platformOf,
  runDmaWorkload,
} from "./iommu/workload.js";
export type { OvercommitConfig } from "./overcommit/config.js";
export { type MultiVmLayout, type MultiVmWorkload, OvercommitHost } from "./overcommit/host.js";
export {
  buildOvercommitReport,
  formatOvercommitReport,
  type OvercommitReport,
  timelineCsv,
} from "./overcommit/report.js";
export { formatSeedTable, runSeedTable, type SeedRow } from "./overcommit/seed-table.js";
export type { OvercommitServices } from "./overcommit/services.js";
export { formatCsv } from "./report/csv.js";
export { bucketLabel, renderHtmlReport } from "./report/html.js";
export {
  buildReport,
  CYCLES_BY_WHO,
  formatTable,
  type RunReport,
  type RunSource,
  VERSION,
} from "./report/report.js";
export {
  BadRecordError,
  type ExitCounts,
  Simulation,
  type SimulationOptions,
} from "./runner/simulation.js";
export { type Compression, compressionOf, TraceError } from "./trace/decompress.js";
export {
  type ReplayOptions,
  replayTraceData,
  type TraceReplayResult,
} from "./trace/replay-data.js";
export {
  type BatchHandler,
  OWN_HEADER_BYTES,
  OWN_MAGIC,
  OWN_VERSION,
  type ReadTraceOptions,
  readTraceData,
  TRACE_FORMATS,
  type TraceData,
  type TraceFormat,
  type TraceFormatOption,
  type TracePosition,
} from "./trace/source.js";
export {
  CHURN_WORKLOADS,
  type ChurnSpec,
  type ChurnWorkloadName,
  runChurnWorkload,
} from "./workload/churn.js";
export {
  defaultMultiVmOptions,
  MULTI_VM_WORKLOADS,
  MultiVm,
  type MultiVmOptions,
  type MultiVmWorkloadName,
} from "./workload/multivm.js";
export { type HostWorkloadSpec, runWorkload } from "./workload/run.js";
export {
  createWorkload,
  WORKLOAD_NAMES,
  type Workload,
  type WorkloadName,
  type WorkloadOptions,
  type WorkloadSpec,
} from "./workload/synthetic.js";
