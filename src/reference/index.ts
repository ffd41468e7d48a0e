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
