// The nested dimension of the reference model (docs/MODEL.md §12): how one EPT or NPT entry reads, and
// how a nested fault is reported. The walk itself lives in machine.ts next to the guest walk it serves.

/** Nested rights (MODEL.md §12.1): the `need` and the cached rights of nested entries. */
export const NESTED_R = 1;
export const NESTED_W = 2;
export const NESTED_X = 4;
export const NESTED_ALL = NESTED_R | NESTED_W | NESTED_X;

export type NestedMode = "none" | "ept" | "npt";

export const FAULT_EPT_VIOLATION = 48;
export const FAULT_EPT_MISCONFIG = 49;
export const FAULT_NPF = 0x400;

const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;
const EPT_NON_LEAF_RESERVED = 0x78n; // bits 6:3
const EPT_LARGE = 1n << 7n;
const EPT_2M_RESERVED = 0x1f_f000n; // bits 20:12
const EPT_1G_RESERVED = 0x3fff_f000n; // bits 29:12
const X86_PRESENT = 1n;
const X86_RW = 1n << 1n;
const X86_US = 1n << 2n;
const X86_PS = 1n << 7n;
const X86_XD = 1n << 63n;
const X86_1G_RESERVED = 0x3fffe000n;
const X86_2M_RESERVED = 0x1fe000n;

/** Accessed and dirty bits of nested entries: EPT bits 8/9 (with EPTP bit 6), NPT bits 5/6. */
export function nestedAccessedBit(mode: NestedMode): bigint {
  return mode === "ept" ? 1n << 8n : 1n << 5n;
}

export function nestedDirtyBit(mode: NestedMode): bigint {
  return mode === "ept" ? 1n << 9n : 1n << 6n;
}

/** One nested entry as §12.1 step 3 reads it. */
export type NestedEntry =
  | { kind: "notPresent" }
  /** EPT misconfiguration or NPT reserved bit. */
  | { kind: "reserved" }
  | {
      kind: "present";
      leaf: boolean;
      /** EPT: bits 2:0. NPT: R, W = R/W, X = !XD (accumulated by the caller). */
      rights: number;
      /** NPT only: the U/S bit (every nested access is a user access). */
      user: boolean;
      next: bigint;
    };

export function decodeEpt(
  entry: bigint,
  level: number,
  reservedAddressMask: bigint,
  gbPages: boolean,
  executeOnly: boolean,
): NestedEntry {
  const rights = Number(entry & 7n);
  if (rights === 0) return { kind: "notPresent" };
  const large = (entry & EPT_LARGE) !== 0n;
  const leaf = level === 1 || (large && (level === 2 || level === 3));
  const memoryType = Number((entry >> 3n) & 7n);
  const misconfigured =
    rights === 2 ||
    rights === 6 ||
    (rights === 4 && !executeOnly) ||
    (entry & reservedAddressMask) !== 0n ||
    (!leaf && (entry & EPT_NON_LEAF_RESERVED) !== 0n) ||
    (large && level >= 4) ||
    (large && level === 3 && !gbPages) ||
    (leaf && (memoryType === 2 || memoryType === 3 || memoryType === 7)) ||
    (leaf && level === 2 && (entry & EPT_2M_RESERVED) !== 0n) ||
    (leaf && level === 3 && (entry & EPT_1G_RESERVED) !== 0n);
  if (misconfigured) return { kind: "reserved" };
  return { kind: "present", leaf, rights, user: true, next: entry & ADDRESS_MASK };
}

/** NPT entries are long-mode entries with the host's NXE = 1 (§12.1, docs/ept-npt.md §NPT and the VMCB). */
export function decodeNpt(
  entry: bigint,
  level: number,
  reservedAddressMask: bigint,
  gbPages: boolean,
  _executeOnly: boolean,
): NestedEntry {
  if ((entry & X86_PRESENT) === 0n) return { kind: "notPresent" };
  const ps = (entry & X86_PS) !== 0n;
  const reserved =
    (entry & reservedAddressMask) !== 0n ||
    (ps && level >= 4) ||
    (ps && level === 3 && !gbPages) ||
    (ps && level === 3 && (entry & X86_1G_RESERVED) !== 0n) ||
    (ps && level === 2 && (entry & X86_2M_RESERVED) !== 0n);
  if (reserved) return { kind: "reserved" };
  const leaf = level === 1 || (ps && (level === 2 || level === 3));
  const rights =
    NESTED_R | ((entry & X86_RW) !== 0n ? NESTED_W : 0) | ((entry & X86_XD) !== 0n ? 0 : NESTED_X);
  return { kind: "present", leaf, rights, user: (entry & X86_US) !== 0n, next: entry & ADDRESS_MASK };
}

/** What the access that met a nested fault was (§12.3). */
export type NestedAccess =
  /** A guest paging-structure read. */
  | { stage: "table" }
  /** A guest A/D write-back (EPT without A/D only). */
  | { stage: "adWrite" }
  /** The final GPA, with the guest's effective rights for qualification bits 9-11. */
  | { stage: "final"; need: number; us: boolean; rw: boolean; xd: boolean };

export type NestedFaultCause = "notPresent" | "reserved" | "protection";

/** Fault number and error code (EPT qualification or #NPF EXITINFO1) of a nested fault (§12.3). */
export function nestedFault(
  mode: NestedMode,
  cause: NestedFaultCause,
  access: NestedAccess,
  rights: number,
  nestedAd: boolean,
): { fault: number; errorCode: number } {
  if (mode === "ept") {
    if (cause === "reserved") return { fault: FAULT_EPT_MISCONFIG, errorCode: 0 };
    let q = 0;
    if (access.stage === "table") q |= nestedAd ? 3 : 1;
    else if (access.stage === "adWrite") q |= 2;
    else q |= access.need & NESTED_X ? 4 : access.need & NESTED_W ? 2 : 1;
    q |= (cause === "notPresent" ? 0 : rights & 7) << 3;
    q |= 1 << 7;
    if (access.stage === "final") {
      q |= 1 << 8;
      if (access.us) q |= 1 << 9;
      if (access.rw) q |= 1 << 10;
      if (access.xd) q |= 1 << 11;
    }
    return { fault: FAULT_EPT_VIOLATION, errorCode: q };
  }
  let info = 4; // U: every nested access is a user access
  if (cause !== "notPresent") info |= 1;
  if (access.stage !== "final" || access.need & NESTED_W) info |= 2;
  if (cause === "reserved") info |= 8;
  if (access.stage === "final" && access.need & NESTED_X) info |= 16;
  info += access.stage === "final" ? 2 ** 32 : 2 ** 33;
  return { fault: FAULT_NPF, errorCode: info };
}
