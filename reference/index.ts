/**
 * The independent TypeScript model of docs/MODEL.md (the MMU with its nested dimension, and the IOMMU),
 * written from that text alone. memvirt's own differential tests compare the WebAssembly core against
 * it; embedders can run their own the same way: `import { RefMachine } from "memvirt/reference"`.
 *
 * @module memvirt/reference
 */

export {
  CAUSE,
  type RefDmaRequest,
  type RefDmaResult,
  type RefGeometry,
  RefIommu,
  type RefIommuConfig,
  type RefIommuKind,
} from "./iommu.js";
export type { NestedStats, RefVmEntry } from "./machine.js";
export {
  defaultRegs,
  FAULT_GENERAL_PROTECTION,
  FAULT_NONE,
  FAULT_PAGE,
  histogramBucket,
  isCanonical,
  KIND_FETCH,
  KIND_READ,
  KIND_SHADOW_STACK_READ,
  KIND_SHADOW_STACK_WRITE,
  KIND_WRITE,
  RefMachine,
  splitmix64,
  XorShift64,
} from "./machine.js";
export {
  FAULT_EPT_MISCONFIG,
  FAULT_EPT_VIOLATION,
  FAULT_NPF,
  NESTED_R,
  NESTED_W,
  NESTED_X,
  type NestedMode,
} from "./nested.js";
