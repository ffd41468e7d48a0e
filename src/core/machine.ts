// The typed host-side view of one WebAssembly core: a machine with CPUs, TLBs, paging-structure
// caches, a data-cache model and sparse physical memory. Addresses are bigint at this boundary.

import { MemvirtError } from "./errors.js";
import * as L from "./layout.js";
import * as S from "./stats-layout.js";
import {
  type AccessResult,
  type MachineConfig,
  PAGE_SHIFT,
  type PageSize,
  type Policy,
  type Regs,
  type Stats,
} from "./types.js";
import {
  type BuildName,
  type CoreExports,
  defaultBuild,
  instantiateCore,
  instantiateCoreAsync,
  type WasmSource,
} from "./wasm.js";

export { MemvirtError };

/** The core's code of a replacement policy. */
export function policyCode(policy: Policy): number {
  const code = L.POLICY_NAMES.indexOf(policy);
  if (code < 0) throw new MemvirtError(`unknown replacement policy ${policy}`);
  return code;
}
const SIZE_BIT: Record<PageSize, number> = { "4K": 1, "2M": 2, "1G": 4 };
/** The CPU TLB levels the configuration names (the nested TLB has a key of its own). */
const TLB_LEVELS = ["l1d", "l1i", "l2"] as const satisfies readonly L.TlbLevelName[];
const PSC_LEVELS = [
  ["pml5", 5],
  ["pml4", 4],
  ["pdpte", 3],
  ["pde", 2],
] as const;
const PHYS_ERRORS: Record<number, string> = {
  [L.PhysError.BeyondMaxPhyAddr]: "physical address beyond MAXPHYADDR",
  [L.PhysError.DirectoryFull]: "physical-memory directory full (raise memory.backedFramesLog2)",
  [L.PhysError.OutOfMemory]:
    "out of WebAssembly memory (the engine refused to grow linear memory, or memory.limitMiB was reached)",
  [L.PhysError.Misaligned]: "misaligned physical address (8-byte entries only)",
};
const SETUP_ERRORS: Record<number, string> = {
  [L.SetupError.Geometry]: "entries/ways must give a power-of-two number of sets",
  [L.SetupError.RegionFull]: "does not fit the core (too many arrays, entries or contexts)",
  [L.SetupError.OutOfMemory]:
    "linear memory cannot hold it (raise memory.limitMiB, or configure smaller structures)",
};
const REGISTER_OFFSETS: Record<keyof Regs, number> = {
  cr0: L.R_CR0,
  cr3: L.R_CR3,
  cr4: L.R_CR4,
  efer: L.R_EFER,
  pkru: L.R_PKRU,
  pkrs: L.R_PKRS,
  rflags: L.R_RFLAGS,
  cpl: L.R_CPL,
};

export const EXIT_REASONS = L.EXIT_REASON_NAMES;

/** The nested dimension a CPU runs under. */
export type NestedMode = L.NestedModeName;

/** Rights a nested translation needs (N_R, N_W, N_X). */
export const NESTED_READ = 1;
export const NESTED_WRITE = 2;
export const NESTED_EXECUTE = 4;

/**
 * VM entry: the nested dimension and its root as the hardware holds them. Under EPT the root is the
 * EPTP of the VMCS, which alone gives the walk length (bits 5:3) and A/D enable (bit 6); under NPT it
 * is nCR3, walked with the host's paging depth.
 */
export type VmEntry =
  | {
      nested: "none";
      /** VPID or ASID; 0 means VPIDs are off. */
      vpid?: number;
    }
  | {
      nested: "ept";
      /** EPTP: memory type (bits 2:0, UC 0 or WB 6), walk length - 1 (5:3), A/D enable (6), EPT PML4/PML5 address. */
      root: bigint;
      vpid?: number;
      /**
       * "Enable PML" (SDM 29.3.6): the page-modification log's 4 KiB-aligned host-physical address and
       * the PML index to start from (511 when absent).
       */
      pml?: { address: bigint; index?: number };
    }
  | {
      nested: "npt";
      /** nCR3. */
      root: bigint;
      /** The host's paging depth, which the nested walk uses: 4 (default) or 5. */
      nestedLevels?: 4 | 5;
      /** ASID; 0 means ASIDs are off. */
      vpid?: number;
    };
export type ExitReason = L.ExitReasonName;

export interface ExitRecord {
  reason: ExitReason;
  cpu: number;
  index: number;
  kind: number;
  linear: bigint;
  guestPhysical: bigint;
  /** #PF error code or exit qualification. */
  qualification: bigint;
  refs: number;
}

export interface MachineOptions {
  /** The packaged core to load when `wasm` is not given: "release" (default) or "debug". */
  build?: BuildName;
  /**
   * The core's bytes, a compiled `WebAssembly.Module`, or a URL to load it from (custom builds,
   * bundlers that do not emit the packaged file, hosts that compile the core themselves).
   */
  wasm?: WasmSource;
  /** An instance made by `instantiateCoreAsync`, for constructors that must not instantiate synchronously. */
  core?: CoreExports;
  /** log2 of the frame-directory capacity: 3/4 of it can be backed frames. */
  backedFramesLog2?: number;
  /** Cap on linear memory in MiB (0 = what the engine allows). */
  memoryLimitMiB?: number;
}

// The result block of a single translation, as word indices (module constants: V8 folds these, not
// loads from the layout namespace).
const RS_PAGE_SHIFT_WORD = (L.RESULT_BASE + L.RS_PAGE_SHIFT) / 4;
const RS_ERROR_WORD = (L.RESULT_BASE + L.RS_ERROR) / 4;
const RS_REFS_WORD = (L.RESULT_BASE + L.RS_REFS) / 4;
const RS_CYCLES_WORD = (L.RESULT_BASE + L.RS_CYCLES) / 4;
const RS_NESTED_REFS_WORD = (L.RESULT_BASE + L.RS_NESTED_REFS) / 4;
const RS_PA_QUAD = (L.RESULT_BASE + L.RS_PA) / 8;
const RS_GPA_QUAD = (L.RESULT_BASE + L.RS_GPA) / 8;

const WASM_PAGE = 65536;

/** assembly/timing/trace.ts TRACE_ENTRY_SIZE, and its levels of the cache model. */
const TRACE_ENTRY_SIZE = 32;
const SERVED_BY = ["l1", "l2", "llc", "dram"] as const;

/** One page-table reference of a traced access (Machine.traceTranslate). */
export interface TracedReference {
  /** Host-physical address of the 8-byte entry. */
  address: bigint;
  /** The entry as read (for an A/D update, as written). */
  value: bigint;
  cycles: number;
  /** The level of the cache model that held the entry's line. */
  servedBy: (typeof SERVED_BY)[number];
  /** A locked update of the entry's accessed or dirty flag, not a read of the walk. */
  update: boolean;
}

/** What Machine.saveCoreState returns. */
export interface CoreState {
  build: BuildName;
  memoryPages: number;
  globals: Uint8Array;
  pages: { index: number; bytes: Uint8Array }[];
}

export class Machine {
  readonly core: CoreExports;
  readonly build: BuildName;
  /** 2^MAXPHYADDR: the first address that is not physical memory. */
  private readonly physicalLimit: bigint;
  private buffer!: ArrayBuffer;
  private u8!: Uint8Array;
  private u32!: Uint32Array;
  private u64!: BigUint64Array;

  /**
   * A machine on every host: Node, a browser page (whose main thread may not compile or instantiate
   * a module this size synchronously), a Web Worker, a bundled application. Without `wasm` it loads
   * the packaged core through `new URL(..., import.meta.url)`.
   */
  static async create(config: MachineConfig, options: MachineOptions = {}): Promise<Machine> {
    const build = options.build ?? defaultBuild();
    const core = options.core ?? (await instantiateCoreAsync(build, options.wasm));
    return new Machine(config, { ...options, build, core });
  }

  /**
   * A machine, synchronously: in Node (which reads the packaged core from disk), in a worker, or
   * anywhere once the build was loaded (`await loadCore()`, or an earlier `Machine.create` of that build).
   */
  constructor(
    readonly config: MachineConfig,
    options: MachineOptions = {},
  ) {
    this.build = options.build ?? defaultBuild();
    this.core = options.core ?? instantiateCore(this.build, options.wasm);
    this.physicalLimit = 1n << BigInt(config.maxPhyAddr);
    this.cpus = config.cpus;
    this.translateCore = this.core.translate;
    this.inGuest = new Array<boolean>(config.cpus).fill(false);
    const limitPages = Math.floor(((options.memoryLimitMiB ?? 0) * 1024 * 1024) / 65536);
    this.check(
      this.core.machineInit(
        config.cpus,
        config.maxPhyAddr,
        config.gbPages ? 1 : 0,
        options.backedFramesLog2 ?? 20,
        limitPages,
        BigInt.asUintN(64, BigInt(config.seed)),
        config.eptExecuteOnly === false ? 0 : 1,
      ),
      "machine",
    );
    for (let cpu = 0; cpu < config.cpus; cpu++) {
      TLB_LEVELS.forEach((name) => {
        const level = L.TLB_LEVEL_NAMES.indexOf(name);
        const spec = config.tlb[name];
        if (!spec) return;
        this.check(this.core.tlbLevel(cpu, level, spec.latency), `tlb.${name}`);
        spec.arrays.forEach((array, index) => {
          const mask = array.sizes.reduce((m, s) => m | SIZE_BIT[s], 0);
          this.check(
            this.core.tlbArray(cpu, level, mask, array.entries, array.ways, policyCode(array.policy)),
            `tlb.${name}.arrays[${index}]`,
          );
        });
      });
      for (const [name, level] of PSC_LEVELS) {
        const spec = config.psc[name];
        if (!spec) continue;
        this.check(
          this.core.pscCache(cpu, level, spec.entries, spec.ways, policyCode(spec.policy), 0),
          `psc.${name}`,
        );
      }
      const nestedTlb = config.nestedTlb;
      if (nestedTlb) {
        this.check(this.core.tlbLevel(cpu, L.TlbLevel.Nested, nestedTlb.latency), "nestedTlb");
        nestedTlb.arrays.forEach((array, index) => {
          const mask = array.sizes.reduce((m, s) => m | SIZE_BIT[s], 0);
          this.check(
            this.core.tlbArray(
              cpu,
              L.TlbLevel.Nested,
              mask,
              array.entries,
              array.ways,
              policyCode(array.policy),
            ),
            `nestedTlb.arrays[${index}]`,
          );
        });
      }
      for (const [name, level] of PSC_LEVELS) {
        const spec = config.nestedPsc?.[name];
        if (!spec) continue;
        this.check(
          this.core.pscCache(cpu, level, spec.entries, spec.ways, policyCode(spec.policy), 1),
          `nestedPsc.${name}`,
        );
      }
    }
    this.core.setPscLatency(config.psc.latency);
    L.CACHE_LEVEL_NAMES.forEach((name, level) => {
      const spec = config.cache[name];
      if (spec) this.check(this.core.cacheLevel(level, spec.size, spec.ways, spec.latency), `cache.${name}`);
    });
    this.core.setDramLatency(config.cache.dramLatency);
    this.refreshViews();
  }

  private check(code: number, what: string): void {
    if (code === 0) return;
    throw new MemvirtError(`${what}: ${SETUP_ERRORS[code] ?? "invalid argument"}`);
  }

  /** Typed views over linear memory; rebuilt when memory grows (a grow detaches the old buffer). */
  private refreshViews(): void {
    const buffer = this.core.memory.buffer as ArrayBuffer;
    if (buffer === this.buffer) return;
    this.buffer = buffer;
    this.u8 = new Uint8Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.u64 = new BigUint64Array(buffer);
  }

  /** Where the core's sized regions end: linear memory above it has never been used (and is zero). */
  private heapTop(): number {
    this.refreshViews();
    return this.u32[(L.CTRL_BASE + L.CFG_HEAP_TOP) / 4] || L.HEAP_BASE;
  }

  /**
   * The core's whole state: linear memory (its size, and every 64 KiB page below the top of its used
   * regions that is not all zeros; a fresh instance's memory is zero, and most of the TLB and cache
   * arrays stay so) plus the WebAssembly globals the core copies out for this purpose (see
   * assembly/snapshot.ts). The pages are views of linear memory, not copies: write them out before the
   * machine runs again.
   */
  saveCoreState(): CoreState {
    const scratch = this.core.saveCoreGlobals();
    const top = this.heapTop();
    const globals = this.u8.slice(scratch, scratch + L.SNAPSHOT_SCRATCH_SIZE);
    const memory = this.u8;
    const pages: { index: number; bytes: Uint8Array }[] = [];
    const words = new BigUint64Array(memory.buffer, 0, memory.length / 8);
    const zero = new Uint8Array(WASM_PAGE);
    // Node's Buffer.compare is a memcmp: a zero page costs a few microseconds to recognise.
    const compare = (globalThis as { Buffer?: { compare(a: Uint8Array, b: Uint8Array): number } }).Buffer
      ?.compare;
    const isZero = (page: number, bytes: Uint8Array): boolean => {
      if (compare) return compare(bytes, zero) === 0;
      for (let i = (page * WASM_PAGE) / 8, end = i + WASM_PAGE / 8; i < end; i++)
        if (words[i] !== 0n) return false;
      return true;
    };
    // Reading memory makes its pages resident: memory above the top is never looked at.
    for (let page = 0; page * WASM_PAGE < top; page++) {
      const bytes = memory.subarray(page * WASM_PAGE, (page + 1) * WASM_PAGE);
      if (!isZero(page, bytes)) pages.push({ index: page, bytes });
    }
    return { build: this.build, memoryPages: memory.length / WASM_PAGE, globals, pages };
  }

  /** Puts back a state saveCoreState returned, on a machine built from the same configuration. */
  restoreCoreState(state: CoreState): void {
    if (state.build !== this.build) {
      throw new MemvirtError(`the checkpoint was taken with the ${state.build} build, not ${this.build}`);
    }
    // saveCoreGlobals returns the scratch block's address without side effects worth keeping: the
    // globals it copies are overwritten by restoreCoreGlobals right after.
    const scratch = this.core.saveCoreGlobals();
    const globals = new Uint8Array(L.SNAPSHOT_SCRATCH_SIZE);
    globals.set(state.globals);
    if (new DataView(globals.buffer).getUint32(0, true) !== L.CORE_LAYOUT_VERSION) {
      throw new MemvirtError("the checkpoint was taken by a core with another memory layout");
    }
    // This machine has used memory only below its top; above, it is zero already.
    const used = this.heapTop();
    const current = this.core.memory.buffer.byteLength / WASM_PAGE;
    if (state.memoryPages > current) this.core.memory.grow(state.memoryPages - current);
    this.refreshViews();
    this.u8.fill(0, 0, used);
    for (const page of state.pages) this.u8.set(page.bytes, page.index * WASM_PAGE);
    this.u8.set(globals, scratch);
    this.core.restoreCoreGlobals();
  }

  get memory(): Uint8Array {
    this.refreshViews();
    return this.u8;
  }

  /** A DataView over the record buffer (RECORD_CAPACITY records of RECORD_SIZE bytes). */
  recordView(): DataView {
    this.refreshViews();
    return new DataView(this.buffer, L.RECORDS_BASE, L.RECORD_CAPACITY * L.RECORD_SIZE);
  }

  /** The text buffer for in-core trace parsing (the core allocates it when first asked). */
  textBuffer(): Uint8Array {
    const base = this.core.textBuffer();
    if (base === 0) throw new MemvirtError(`text buffer: ${PHYS_ERRORS[L.PhysError.OutOfMemory]}`);
    this.refreshViews();
    return new Uint8Array(this.buffer, base, L.TEXT_SIZE);
  }

  /** The DMA request buffer (DMA_CAPACITY records of DMA_RECORD_SIZE bytes; allocated when first asked). */
  dmaBuffer(): DataView {
    const base = this.core.dmaBuffer();
    if (base === 0) throw new MemvirtError(`DMA buffer: ${PHYS_ERRORS[L.PhysError.OutOfMemory]}`);
    this.refreshViews();
    return new DataView(this.buffer, base, L.DMA_CAPACITY * L.DMA_RECORD_SIZE);
  }

  /**
   * The demand-paging region (assembly/demand.ts: DEMAND_REGION_SIZE bytes laid out by the DM_*
   * constants), allocated when first asked.
   */
  demandRegion(): DataView {
    const base = this.core.demandRegion();
    if (base === 0) throw new MemvirtError(`demand-paging region: ${PHYS_ERRORS[L.PhysError.OutOfMemory]}`);
    this.refreshViews();
    return new DataView(this.buffer, base, L.DEMAND_REGION_SIZE);
  }

  // --- physical memory -------------------------------------------------------------------------

  writePhys64(pa: bigint, value: bigint): void {
    const code = this.core.writePhys64(pa, BigInt.asUintN(64, value));
    if (code !== 0) {
      // A full directory or linear memory is a limit the config sets (memory.*): the user's to raise.
      throw new MemvirtError(
        `write of physical 0x${pa.toString(16)}: ${PHYS_ERRORS[code] ?? `error ${code}`}`,
        code === 2 || code === 3 ? 2 : 1,
      );
    }
  }

  /** Physical memory is the addresses below 2^MAXPHYADDR (docs/MODEL.md §1): reads beyond it are refused too. */
  readPhys64(pa: bigint): bigint {
    if ((pa & 7n) !== 0n)
      throw new MemvirtError(
        `read of physical 0x${pa.toString(16)}: ${PHYS_ERRORS[L.PhysError.Misaligned]}`,
        1,
      );
    if (pa < 0n || pa >= this.physicalLimit)
      throw new MemvirtError(
        `read of physical 0x${pa.toString(16)}: ${PHYS_ERRORS[L.PhysError.BeyondMaxPhyAddr]}`,
        1,
      );
    return BigInt.asUintN(64, this.core.readPhys64(pa));
  }

  releaseFrame(frame: bigint): void {
    this.core.releaseFrame(frame);
  }

  backedFrames(): number {
    return this.core.backedFrames();
  }

  // --- registers and instructions ---------------------------------------------------------------

  private cpuBlock(cpu: number): number {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.config.cpus) throw new MemvirtError(`no cpu ${cpu}`);
    return L.CTRL_BASE + L.CPU_BASE + cpu * L.CPU_STRIDE;
  }

  /** Loads registers as machine set-up does, with none of the flushes the instructions imply. */
  setRegs(cpu: number, regs: Partial<Regs>): void {
    this.cpuBlock(cpu);
    for (const [name, value] of Object.entries(regs) as [keyof Regs, bigint | number][]) {
      if (value === undefined) continue;
      this.core.setReg(cpu, REGISTER_OFFSETS[name], BigInt.asUintN(64, BigInt(value)));
    }
  }

  getRegs(cpu: number): Regs {
    const block = this.cpuBlock(cpu);
    this.refreshViews();
    const at = (offset: number) => this.u64[(block + offset) / 8];
    return {
      cr0: at(L.R_CR0),
      cr3: at(L.R_CR3),
      cr4: at(L.R_CR4),
      efer: at(L.R_EFER),
      pkru: Number(at(L.R_PKRU)),
      pkrs: Number(at(L.R_PKRS)),
      rflags: at(L.R_RFLAGS),
      cpl: Number(at(L.R_CPL)),
    };
  }

  movCr3(cpu: number, value: bigint): void {
    this.cpuBlock(cpu);
    this.core.movCr3(cpu, BigInt.asUintN(64, value));
  }

  /** false: the write would #GP and nothing changed. */
  movCr4(cpu: number, value: bigint): boolean {
    this.cpuBlock(cpu);
    return this.core.movCr4(cpu, BigInt.asUintN(64, value)) !== 0;
  }

  invlpg(cpu: number, la: bigint): void {
    this.cpuBlock(cpu);
    this.core.invlpg(cpu, BigInt.asUintN(64, la));
  }

  /** false: #GP (bad type, PCID or address) and nothing changed. */
  invpcid(cpu: number, type: number, pcid: number, la = 0n): boolean {
    this.cpuBlock(cpu);
    // The type register and descriptor are 64-bit: anything that does not fit the core's u32 is #GP too.
    if (!Number.isInteger(type) || type < 0 || type > 3) return false;
    if (!Number.isInteger(pcid) || pcid < 0 || pcid > 0xfff) return false;
    return this.core.invpcid(cpu, type, pcid, BigInt.asUintN(64, la)) !== 0;
  }

  flushAll(cpu: number): void {
    this.cpuBlock(cpu);
    this.core.flushAll(cpu);
  }

  // --- accesses -----------------------------------------------------------------------------------

  /**
   * Translates one access (kind 0 read, 1 write, 2 fetch, 3/4 shadow-stack read/write; flag 0x80 implicit).
   * `retry` marks the retry of an access whose fault was fixed: its TLB lookups are not counted again.
   */
  translate(cpu: number, la: bigint, kind: number, flags = 0, retry = false): AccessResult {
    // The per-access path of embedders: no BigInt arithmetic, no view rebuilt unless memory grew, and
    // the 64-bit words that fit a double (error code, cycles) read as two 32-bit halves.
    if (!(cpu >= 0 && cpu < this.cpus && (cpu | 0) === cpu)) throw new MemvirtError(`no cpu ${cpu}`);
    return this.result(cpu, this.translateCore(cpu, la, (kind | flags) & 0xff, retry ? 1 : 0));
  }

  /** The result block of the access just made. */
  private result(cpu: number, fault: number): AccessResult {
    // Growing linear memory detaches the old buffer, and views of a detached buffer have length 0:
    // cheaper to test than fetching memory.buffer on every call.
    if (this.u32.length === 0) this.refreshViews();
    const u32 = this.u32;
    const shift = u32[RS_PAGE_SHIFT_WORD];
    const result: AccessResult = {
      fault,
      pa: fault === 0 ? this.u64[RS_PA_QUAD] : 0n,
      errorCode: u32[RS_ERROR_WORD] + u32[RS_ERROR_WORD + 1] * 2 ** 32,
      pageSize: shift === 0 ? 0 : 1 << shift, // shifts 12, 21, 30: `2 ** shift` costs V8 a call
      refs: u32[RS_REFS_WORD],
      cycles: u32[RS_CYCLES_WORD] + u32[RS_CYCLES_WORD + 1] * 2 ** 32,
    };
    if (this.inGuest[cpu]) {
      result.gpa = this.u64[RS_GPA_QUAD];
      result.nestedRefs = u32[RS_NESTED_REFS_WORD];
    }
    return result;
  }

  /**
   * `translate` with every page-table reference the access makes, in order: each entry's host-physical
   * address and the value read (for an A/D update, the value written), the level of the cache model
   * that served its line, its cycles, and whether it was an A/D update. The access costs and counts
   * exactly what `translate` would; it is for showing one walk, not for speed.
   */
  traceTranslate(
    cpu: number,
    la: bigint,
    kind: number,
    flags = 0,
  ): { result: AccessResult; references: TracedReference[] } {
    this.cpuBlock(cpu);
    const count = this.core.traceTranslate(cpu, BigInt.asUintN(64, la), (kind | flags) & 0xff);
    this.refreshViews();
    const fault = this.u32[(L.RESULT_BASE + L.RS_FAULT) / 4];
    const result = this.result(cpu, fault);
    const base = this.core.traceReferences();
    const view = new DataView(this.core.memory.buffer);
    const references: TracedReference[] = [];
    for (let i = 0; i < count; i++) {
      const at = base + i * TRACE_ENTRY_SIZE;
      references.push({
        address: view.getBigUint64(at, true),
        value: view.getBigUint64(at + 8, true),
        cycles: view.getUint32(at + 16, true),
        servedBy: SERVED_BY[view.getUint32(at + 20, true)],
        update: view.getUint32(at + 24, true) !== 0,
      });
    }
    const dropped = this.core.traceReferencesDropped();
    if (dropped > 0)
      throw new MemvirtError(`traceTranslate: ${dropped} references beyond the trace's capacity`);
    return { result, references };
  }

  /** What the CPU's walks go through besides its own tables: none, or EPT/NPT from this root. */
  nestedContext(cpu: number): { mode: NestedMode; root: bigint; levels: number; accessedDirty: boolean } {
    const block = this.cpuBlock(cpu);
    this.refreshViews();
    const mode = this.u32[(block + L.R_NESTED_MODE) / 4];
    return {
      mode: L.NESTED_MODE_NAMES[mode] ?? "none",
      root: this.u64[(block + L.R_NESTED_ROOT) / 8],
      levels: this.u32[(block + L.R_NESTED_LEVELS) / 4],
      accessedDirty: this.u32[(block + L.R_NESTED_AD) / 4] !== 0,
    };
  }

  private readonly inGuest: boolean[];
  private readonly cpus: number;
  private readonly translateCore: CoreExports["translate"];

  /**
   * VM entry: the CPU now runs a guest whose paging is translated through `entry.nested` (or not, for
   * shadow and paravirtual paging), with its TLB entries tagged by the VPID/ASID and the nested root.
   */
  vmEnter(cpu: number, entry: VmEntry): void {
    this.cpuBlock(cpu);
    const root = entry.nested === "none" ? 0n : BigInt.asUintN(64, entry.root);
    const code = this.core.vmEnter(
      cpu,
      L.NESTED_MODE_NAMES.indexOf(entry.nested),
      root,
      entry.nested === "npt" ? (entry.nestedLevels ?? 4) : 0,
      entry.vpid ?? 0,
    );
    if (code < 0) {
      const what = `vmEnter: ${entry.nested === "ept" ? "EPTP" : "nCR3"} 0x${root.toString(16)}`;
      if (code === L.SetupError.EptpMemoryType)
        throw new MemvirtError(
          `${what}: memory type ${root & 7n} is reserved (EPT structures are UC (0) or WB (6))`,
        );
      if (code === L.SetupError.EptpWalkLength)
        throw new MemvirtError(
          `${what}: walk length ${((root >> 3n) & 7n) + 1n} is not supported (bits 5:3 are 3 for 4 levels, 4 for 5)`,
        );
      if (code === L.SetupError.RootReserved)
        throw new MemvirtError(
          `${what}: a reserved bit is set (${entry.nested === "ept" ? "bits 11:7, or " : ""}bits at or above MAXPHYADDR ${this.config.maxPhyAddr})`,
        );
      this.check(code, "vmEnter");
    }
    if (entry.nested === "ept" && entry.pml) {
      const address = BigInt.asUintN(64, entry.pml.address);
      const index = entry.pml.index ?? L.PML_ENTRIES - 1;
      if (!Number.isInteger(index) || index < 0 || index > 0xffff)
        throw new MemvirtError(`vmEnter: PML index ${index} is not a 16-bit value`);
      const pml = this.core.enablePml(cpu, address, index);
      if (pml === L.SetupError.PmlAddress)
        throw new MemvirtError(
          `vmEnter: PML address 0x${address.toString(16)} must be 4 KiB-aligned and below MAXPHYADDR ${this.config.maxPhyAddr}`,
        );
      this.check(pml, "vmEnter: PML");
    }
    this.inGuest[cpu] = true;
  }

  /** The PML index of `cpu` (VMREAD): the next log entry the CPU writes; above 511 the log is full. */
  pmlIndex(cpu: number): number {
    this.cpuBlock(cpu);
    return this.core.pmlIndex(cpu);
  }

  /** Sets the PML index of `cpu` (VMWRITE), as the VMM does after draining the log. */
  setPmlIndex(cpu: number, index: number): void {
    this.cpuBlock(cpu);
    if (!Number.isInteger(index) || index < 0 || index > 0xffff)
      throw new MemvirtError(`setPmlIndex: ${index} is not a 16-bit value`);
    this.core.setPmlIndex(cpu, index);
  }

  vmLeave(cpu: number): void {
    this.cpuBlock(cpu);
    this.core.vmLeave(cpu);
    this.inGuest[cpu] = false;
  }

  /** A VM exit and re-entry around host work (flushes VPID 0 when VPIDs are off). */
  vmExitEntry(cpu: number): void {
    this.core.vmExitEntry(cpu);
  }

  /** INVEPT: type 1 single-context (the EP4TA in `eptp`), 2 all-context. false: VMfail. */
  invept(cpu: number, type: number, eptp = 0n): boolean {
    this.cpuBlock(cpu);
    if (!Number.isInteger(type) || type < 0 || type > 0xffffffff) return false;
    return this.core.invept(cpu, type, BigInt.asUintN(64, eptp)) !== 0;
  }

  /** INVVPID types 0 (address), 1 (context), 2 (all but VPID 0), 3 (context but globals). false: VMfail. */
  invvpid(cpu: number, type: number, vpid: number, la = 0n): boolean {
    this.cpuBlock(cpu);
    if (
      !Number.isInteger(type) ||
      type < 0 ||
      type > 3 ||
      !Number.isInteger(vpid) ||
      vpid < 0 ||
      vpid > 0xffff
    ) {
      return false;
    }
    return this.core.invvpid(cpu, type, vpid, BigInt.asUintN(64, la)) !== 0;
  }

  /** The VMCB TLB_CONTROL value applied at VMRUN: 0, 1 (all ASIDs), 3 (this ASID), 7 (its non-globals). */
  tlbControl(cpu: number, value: number): boolean {
    this.cpuBlock(cpu);
    if (![0, 1, 3, 7].includes(value)) return false;
    return this.core.tlbControl(cpu, value) !== 0;
  }

  /**
   * Guest-physical -> host-physical through the CPU's nested dimension (as the hardware would for an
   * access needing `need` rights), or undefined on a nested fault.
   */
  translateGuestPhysical(cpu: number, gpa: bigint, need = NESTED_READ): bigint | undefined {
    this.cpuBlock(cpu);
    const hpa = BigInt.asUintN(64, this.core.translateGuestPhysical(cpu, gpa, need));
    return hpa === 0xffff_ffff_ffff_ffffn ? undefined : hpa;
  }

  /** For embedders that drive `translate` themselves: count completed accesses. */
  countAccess(n = 1): void {
    this.core.countAccesses(n);
  }

  /**
   * The embedding batch: translates records [start, end) of the record buffer (`recordView()`; u64
   * linear address, u8 kind | 0x80 implicit, u8 size, u16 cpu, u32 unused) and writes each one's
   * result over it: u64 physical address (for a fault, the #PF error code or exit qualification) at
   * `BATCH_RESULT.pa`, u8 outcome (an index into EXIT_REASONS, 0 "none" = translated) at `.outcome`,
   * u8 log2 page size at `.pageShift`, u16 walk references at `.refs`, u32 cycles at `.cycles`. A fault
   * does not stop the batch, and every record counts as one access.
   */
  translateBatch(start: number, end: number): void {
    if (
      !Number.isInteger(start) ||
      !Number.isInteger(end) ||
      start < 0 ||
      end > L.RECORD_CAPACITY ||
      start > end
    ) {
      throw new MemvirtError(
        `translateBatch: [${start}, ${end}) is not a range of records 0..${L.RECORD_CAPACITY}`,
      );
    }
    this.core.translateBatch(start, end);
  }

  /** Runs records [start, end) of the record buffer; returns where it stopped (see `exit()`). */
  replay(start: number, end: number): number {
    return this.core.replay(start, end);
  }

  exit(): ExitRecord {
    this.refreshViews();
    const base = L.EXIT_BASE;
    const u32 = (offset: number) => this.u32[(base + offset) / 4];
    const u64 = (offset: number) => this.u64[(base + offset) / 8];
    return {
      reason: EXIT_REASONS[u32(L.EX_REASON)] ?? "none",
      cpu: u32(L.EX_CPU),
      index: u32(L.EX_INDEX),
      kind: u32(L.EX_KIND),
      linear: u64(L.EX_LINEAR),
      guestPhysical: u64(L.EX_GUEST_PHYS),
      qualification: u64(L.EX_QUAL),
      refs: u32(L.EX_REFS),
    };
  }

  /** Whether the last replay stopped with an exit of this reason (cheaper than reading the record). */
  exitPending(reason: ExitReason): boolean {
    this.refreshViews();
    return EXIT_REASONS[this.u32[(L.EXIT_BASE + L.EX_REASON) / 4]] === reason;
  }

  /** The pending faulted record is given up (its fault delivered): it counts as completed. */
  completePending(): void {
    this.core.completePendingRecord();
  }

  /** Cycles spent by software (handlers), by category. */
  chargeCycles(cycles: number, category = 0): void {
    this.core.chargeCycles(BigInt(Math.round(cycles)), category);
  }

  setBudget(cycles: number): void {
    this.core.setBudget(BigInt(Math.max(0, Math.round(cycles))));
  }

  resetStats(): void {
    this.core.resetStats();
  }

  tlbValidEntries(cpu: number, level: "l1d" | "l1i" | "l2"): number {
    return this.core.tlbValidEntries(cpu, L.TLB_LEVEL_NAMES.indexOf(level));
  }

  /** Raw counter by index (see stats-layout.ts). */
  counter(index: number): number {
    this.refreshViews();
    return Number(this.u64[L.STATS_BASE / 8 + index]);
  }

  /** Virtualization counters beyond MODEL.md §11. */
  nestedStats() {
    const c = (i: number) => this.counter(i);
    const hm = (i: number) => ({ hits: c(i), misses: c(i + 1) });
    return {
      nestedRefs: c(S.S_NESTED_REFS),
      faultedNestedRefs: c(S.S_FAULTED_NESTED_REFS),
      nestedWalks: c(S.S_NESTED_WALKS),
      nestedTlb: hm(S.S_NTLB),
      nestedPsc: {
        pml5: hm(S.S_NPSC),
        pml4: hm(S.S_NPSC + 2),
        pdpte: hm(S.S_NPSC + 4),
        pde: hm(S.S_NPSC + 6),
      },
      exitsByReason: Object.fromEntries(
        EXIT_REASONS.map((name, i) => [name, c(S.S_EXIT_REASONS + i)]).filter(([name]) => name !== "none"),
      ) as Record<string, number>,
      /** Page-modification logging: guest-physical addresses logged, and the cycles of those writes. */
      pml: { logged: c(S.S_PML_LOGGED), cycles: c(S.S_PML_CYCLES) },
    };
  }

  stats(): Stats {
    const c = (i: number) => this.counter(i);
    const hm = (i: number) => ({ hits: c(i), misses: c(i + 1) });
    return {
      accesses: c(S.S_ACCESSES),
      cycles: c(S.S_CYCLES),
      tlb: { l1d: hm(S.S_TLB), l1i: hm(S.S_TLB + 2), l2: hm(S.S_TLB + 4) },
      walks: c(S.S_WALKS),
      walkRefs: c(S.S_WALK_REFS),
      faultedWalks: c(S.S_FAULTED_WALKS),
      faultedWalkRefs: c(S.S_FAULTED_WALK_REFS),
      adUpdates: c(S.S_AD_UPDATES),
      dirtyAssists: c(S.S_D_ASSISTS),
      psc: { pml5: hm(S.S_PSC), pml4: hm(S.S_PSC + 2), pdpte: hm(S.S_PSC + 4), pde: hm(S.S_PSC + 6) },
      cache: {
        l1: { hits: c(S.S_CACHE) },
        l2: { hits: c(S.S_CACHE + 1) },
        llc: { hits: c(S.S_CACHE + 2) },
        dram: c(S.S_DRAM),
      },
      faults: {
        notPresent: c(S.S_FAULT_NOT_PRESENT),
        reserved: c(S.S_FAULT_RESERVED),
        protection: c(S.S_FAULT_PROTECTION),
        pkey: c(S.S_FAULT_PKEY),
        gp: c(S.S_FAULT_GP),
      },
      pages: { "4K": c(S.S_PAGES), "2M": c(S.S_PAGES + 1), "1G": c(S.S_PAGES + 2) },
      histogram: Array.from({ length: S.HISTOGRAM_BUCKETS }, (_, i) => c(S.S_HISTOGRAM + i)),
    };
  }

  /** Exits taken and handler cycles by category, beyond the MODEL.md statistics. */
  exitsTaken(): number {
    return this.counter(S.S_EXITS);
  }

  handlerCycles(category: number): number {
    return this.counter(S.S_HANDLER_CYCLES + category);
  }
}

export { PAGE_SHIFT };

/** Byte offsets of a translateBatch result within its 16-byte record. */
export const BATCH_RESULT = {
  pa: L.BR_PA,
  outcome: L.BR_OUTCOME,
  pageShift: L.BR_PAGE_SHIFT,
  refs: L.BR_REFS,
  cycles: L.BR_CYCLES,
} as const;

/** Records the record buffer holds, and bytes per record. */
export const RECORD_CAPACITY = L.RECORD_CAPACITY;
export const RECORD_SIZE = L.RECORD_SIZE;
