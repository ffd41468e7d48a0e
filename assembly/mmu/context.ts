// Virtual contexts (SDM 29.4.1): linear and combined mappings are tagged by VPID (ASID on AMD) and
// PCID, combined and guest-physical ones by the EP4TA (nCR3). Entries hold a small context id, or a
// root tag for guest-physical entries; these tables map them back so invalidations can select by
// VPID, by root, or both.
import { CFG_CONTEXTS, CFG_ROOTS, CONTEXT_CAPACITY, CONTEXT_TABLE, CTRL_BASE, ROOT_TABLE } from "../constants";

/** Filters of an invalidation over context ids. */
export const CTX_EXACT: u32 = 0;
export const CTX_VPID: u32 = 1;
export const CTX_ROOT: u32 = 2;
export const CTX_ANY: u32 = 3;
/** Every context except those of VPID 0 (INVVPID all-context). */
export const CTX_NOT_VPID0: u32 = 4;
/** Every context with a nested root (INVEPT all-context). */
export const CTX_ANY_ROOT: u32 = 5;

@inline function contextEntry(id: u32): usize {
  return CTRL_BASE + CONTEXT_TABLE + (id << 3);
}

@inline export function contextVpid(id: u32): u32 {
  return load<u32>(contextEntry(id));
}

@inline export function contextRoot(id: u32): u32 {
  return load<u32>(contextEntry(id), 4);
}

export function resetContexts(): void {
  // Context 0 is the host: VPID 0 without a nested dimension; root tag 0 means "none".
  store<u32>(CTRL_BASE + CFG_CONTEXTS, 1);
  store<u32>(CTRL_BASE + CFG_ROOTS, 1);
  store<u64>(contextEntry(0), 0);
  store<u64>(CTRL_BASE + ROOT_TABLE, 0);
}

/** The tag of a nested root (EP4TA or nCR3), registered on first use; -1 when the table is full. */
export function rootTagFor(root: u64): i32 {
  if (root == 0) return 0;
  const count = load<u32>(CTRL_BASE + CFG_ROOTS);
  for (let tag: u32 = 1; tag < count; tag++) {
    if (load<u64>(CTRL_BASE + ROOT_TABLE + (tag << 3)) == root) return <i32>tag;
  }
  if (count >= CONTEXT_CAPACITY) return -1;
  store<u64>(CTRL_BASE + ROOT_TABLE + (count << 3), root);
  store<u32>(CTRL_BASE + CFG_ROOTS, count + 1);
  return <i32>count;
}

/** The tag of a root already registered, or 0 when none matches. */
export function knownRootTag(root: u64): u32 {
  const count = load<u32>(CTRL_BASE + CFG_ROOTS);
  for (let tag: u32 = 1; tag < count; tag++) {
    if (load<u64>(CTRL_BASE + ROOT_TABLE + (tag << 3)) == root) return tag;
  }
  return 0;
}

/** The context id of (vpid, root tag), registered on first use; -1 when the table is full. */
export function contextFor(vpid: u32, rootTag: u32): i32 {
  const count = load<u32>(CTRL_BASE + CFG_CONTEXTS);
  for (let id: u32 = 0; id < count; id++) {
    if (contextVpid(id) == vpid && contextRoot(id) == rootTag) return <i32>id;
  }
  if (count >= CONTEXT_CAPACITY) return -1;
  store<u32>(contextEntry(count), vpid);
  store<u32>(contextEntry(count), rootTag, 4);
  store<u32>(CTRL_BASE + CFG_CONTEXTS, count + 1);
  return <i32>count;
}

/** Whether context `id` is selected by an invalidation's filter. */
@inline export function contextMatches(id: u32, filter: u32, value: u32): bool {
  if (filter == CTX_EXACT) return id == value;
  if (filter == CTX_VPID) return contextVpid(id) == value;
  if (filter == CTX_ROOT) return contextRoot(id) == value;
  if (filter == CTX_NOT_VPID0) return contextVpid(id) != 0;
  if (filter == CTX_ANY_ROOT) return contextRoot(id) != 0;
  return true;
}
