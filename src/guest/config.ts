// The "guest" section of the configuration: the guest kernel's paging (levels, page size, PCIDs,
// global pages), its memory and frame policy, its processes and scheduler quantum.
import { fail, flag, integer, type Json, object, oneOf, onlyKeys, parseBytes } from "../config/validate.js";
import { PAGE_SIZES, type PageSize } from "../core/types.js";

export type FramePolicy = "sequential" | "random";

export interface GuestConfig {
  levels: 4 | 5;
  pageSize: PageSize;
  /** How the guest OS hands out physical frames. */
  frames: FramePolicy;
  /** Guest physical memory in bytes. */
  memory: number;
  /** Cycles the guest kernel spends on a demand-paging fault (entry, allocation, return). */
  faultCycles: number;
  /** Use PCIDs for address spaces (CR4.PCIDE) so context switches keep TLB entries. */
  pcid: boolean;
  /** Mark the kernel's pages global (CR4.PGE). */
  globalPages: boolean;
  /** Processes sharing the CPUs: each has its own address space (and PCID) over the same addresses. */
  processes: number;
  /** Records each process runs before the scheduler switches to the next (0: never switch). */
  quantum: number;
}

export function defaultGuest(): GuestConfig {
  return {
    levels: 4,
    pageSize: "4K",
    frames: "sequential",
    memory: 64 * 2 ** 30,
    faultCycles: 1500,
    pcid: true,
    globalPages: true,
    processes: 1,
    quantum: 0,
  };
}

export function resolveGuest(value: Json | undefined): GuestConfig {
  const guest = defaultGuest();
  if (value === undefined) return guest;
  const g = object(value, "guest");
  onlyKeys(g, "guest", [
    "levels",
    "pageSize",
    "frames",
    "memory",
    "faultCycles",
    "pcid",
    "globalPages",
    "processes",
    "quantum",
  ]);
  guest.processes = integer(g.processes ?? guest.processes, "guest.processes", 1, 4095);
  guest.quantum = integer(g.quantum ?? guest.quantum, "guest.quantum", 0, 2 ** 31);
  guest.levels = oneOf(g.levels ?? guest.levels, "guest.levels", [4, 5] as const);
  guest.pageSize = oneOf(g.pageSize ?? guest.pageSize, "guest.pageSize", PAGE_SIZES);
  guest.frames = oneOf(g.frames ?? guest.frames, "guest.frames", ["sequential", "random"] as const);
  if (g.memory !== undefined) guest.memory = parseBytes(g.memory, "guest.memory");
  guest.faultCycles = integer(g.faultCycles ?? guest.faultCycles, "guest.faultCycles", 0, 1e9);
  guest.pcid = flag(g.pcid, "guest.pcid", guest.pcid);
  guest.globalPages = flag(g.globalPages, "guest.globalPages", guest.globalPages);
  if (guest.memory < 2 ** 30) fail("guest.memory", "must be at least 1G");
  return guest;
}
