// Loads the WebAssembly core with @assemblyscript/loader, the same way in Node, in a browser page, in a
// Web Worker and under a bundler. Two builds exist: release (O3, no assertions) for speed and debug
// (assertions, source map) for tests. Nothing here imports a Node module: where Node is the host, its
// file system is reached through process.getBuiltinModule, so a browser bundle of this file has no
// `node:` import, and `new Machine(config)` still loads the packaged core synchronously in Node.
import { instantiate, instantiateSync } from "@assemblyscript/loader";
import { MemvirtError } from "./errors.js";

export type BuildName = "release" | "debug";

/**
 * Where the core comes from: its bytes, a compiled module, or a URL (a string or URL object; `file:`
 * URLs are read from disk in Node, others fetched).
 */
export type WasmSource = BufferSource | WebAssembly.Module | URL | string;

/** The raw exports of the core, as assembly/abi.ts defines them. */
export interface CoreExports {
  memory: WebAssembly.Memory;
  machineInit(
    cpus: number,
    maxPhyAddr: number,
    gbPages: number,
    dirLog2: number,
    memLimitPages: number,
    seed: bigint,
    eptExecuteOnly: number,
  ): number;
  tlbLevel(cpu: number, level: number, latency: number): number;
  tlbArray(
    cpu: number,
    level: number,
    sizeMask: number,
    entries: number,
    ways: number,
    policy: number,
  ): number;
  pscCache(cpu: number, level: number, entries: number, ways: number, policy: number, nested: number): number;
  setPscLatency(cycles: number): void;
  cacheLevel(level: number, size: number, ways: number, latency: number): number;
  setDramLatency(cycles: number): void;
  setReg(cpu: number, offset: number, value: bigint): void;
  movCr3(cpu: number, value: bigint): void;
  movCr4(cpu: number, value: bigint): number;
  invlpg(cpu: number, la: bigint): void;
  invpcid(cpu: number, type: number, pcid: number, la: bigint): number;
  flushAll(cpu: number): void;
  writePhys64(pa: bigint, value: bigint): number;
  readPhys64(pa: bigint): bigint;
  releaseFrame(frame: bigint): void;
  backedFrames(): number;
  translate(cpu: number, la: bigint, kindByte: number, retry: number): number;
  countAccesses(n: number): void;
  replay(start: number, end: number): number;
  setBudget(cycles: bigint): void;
  completePendingRecord(): void;
  chargeCycles(cycles: bigint, category: number): void;
  resetStats(): void;
  tlbValidEntries(cpu: number, level: number): number;
  vmEnter(cpu: number, nestedMode: number, root: bigint, nptLevels: number, vpid: number): number;
  translateBatch(start: number, end: number): number;
  vmLeave(cpu: number): void;
  enablePml(cpu: number, address: bigint, index: number): number;
  pmlIndex(cpu: number): number;
  setPmlIndex(cpu: number, index: number): void;
  vmExitEntry(cpu: number): void;
  invept(cpu: number, type: number, eptp: bigint): number;
  invvpid(cpu: number, type: number, vpid: number, la: bigint): number;
  tlbControl(cpu: number, value: number): number;
  translateGuestPhysical(cpu: number, gpa: bigint, need: number): bigint;
  lastWalkFault(): number;
  lastWalkError(): bigint;
  iommuInit(
    kind: number,
    sagaw: number,
    flags: number,
    memTop: bigint,
    iotlbLatency: number,
    faultRecords: number,
  ): number;
  iommuIotlb(entries: number, ways: number, policy: number): number;
  iommuContextCache(entries: number, ways: number, policy: number): number;
  iommuPsc(entries: number, ways: number, policy: number): number;
  iommuSetRoot(value: bigint): void;
  iommuSetQueue(base: bigint, entries: number): void;
  iommuQueueTail(tail: number): number;
  iommuSetEventLog(base: bigint, entries: number): void;
  iommuSetEventHead(head: number): void;
  iommuClearFaultRecord(index: number): void;
  iommuClearStatus(bits: number): void;
  iommuFlushAll(): void;
  dmaRun(start: number, end: number): number;
  iommuTranslate(sid: number, flags: number, pasid: number, iova: bigint): number;
  parseText(format: number, len: number, isFinal: number, firstLine: number, maxRecords: number): number;
  sniffText(len: number): number;
  textBuffer(): number;
  dmaBuffer(): number;
  demandRegion(): number;
  textParsedBytes(): number;
  textParsedLines(): number;
  textParseError(): number;
  textParseErrorLine(): number;
  textEofSeen(): number;
  textResetEof(seen: number): void;
  traceTranslate(cpu: number, la: bigint, kindByte: number): number;
  traceReferences(): number;
  traceReferencesDropped(): number;
  saveCoreGlobals(): number;
  restoreCoreGlobals(): number;
}

/**
 * The packaged core of a build: `dist/build/` beside the compiled JavaScript of an installed package,
 * `build/` in a checkout running its TypeScript sources (both two directories above this module).
 * Each build has its own literal so that bundlers which follow `new URL("...", import.meta.url)`
 * (Vite, webpack, Parcel) emit both files.
 */
export function packagedWasmUrl(build: BuildName): URL {
  return build === "debug"
    ? new URL("../../build/debug.wasm", import.meta.url)
    : new URL("../../build/release.wasm", import.meta.url);
}

interface NodeFs {
  readFileSync(path: URL): Uint8Array<ArrayBuffer>;
  existsSync(path: URL): boolean;
}

interface HostProcess {
  env?: Record<string, string | undefined>;
  getBuiltinModule?: (id: string) => unknown;
}

function hostProcess(): HostProcess | undefined {
  return (globalThis as { process?: HostProcess }).process;
}

/** Node's fs (Node 20.16 and later), or undefined in a browser or worker. */
function nodeFs(): NodeFs | undefined {
  return hostProcess()?.getBuiltinModule?.("fs") as NodeFs | undefined;
}

/** The build the tests and tools use unless told otherwise: MEMVIRT_BUILD=debug|release. */
export function defaultBuild(): BuildName {
  return hostProcess()?.env?.MEMVIRT_BUILD === "debug" ? "debug" : "release";
}

const modules = new Map<BuildName, WebAssembly.Module>();

function isUrl(source: WasmSource): source is URL | string {
  return typeof source === "string" || source instanceof URL;
}

function readPackaged(fs: NodeFs, build: BuildName): Uint8Array<ArrayBuffer> {
  const url = packagedWasmUrl(build);
  if (!fs.existsSync(url)) {
    throw new MemvirtError(
      `memvirt: the ${build} core ${url.pathname} is missing (in a checkout, run \`npm run build\`; an installed package ships it)`,
      1,
    );
  }
  return fs.readFileSync(url);
}

/** A URL given as a string may be relative to the page or worker that runs memvirt. */
function resolveUrl(source: URL | string): URL {
  return new URL(source, (globalThis as { location?: { href: string } }).location?.href);
}

async function readUrl(source: URL | string): Promise<Uint8Array<ArrayBuffer>> {
  const url = resolveUrl(source);
  const fs = nodeFs();
  if (url.protocol === "file:" && fs) return fs.readFileSync(url);
  const response = await fetch(url);
  if (!response.ok)
    throw new MemvirtError(`memvirt: cannot load the core from ${url}: HTTP ${response.status}`, 1);
  return new Uint8Array(await response.arrayBuffer());
}

async function compile(wasm: WasmSource): Promise<WebAssembly.Module> {
  if (wasm instanceof WebAssembly.Module) return wasm;
  return WebAssembly.compile(isUrl(wasm) ? await readUrl(wasm) : wasm);
}

/**
 * Compiles the core asynchronously (as a browser's main thread requires) and keeps it as the core of
 * `build` (default release) in this process, page or worker: later machines of that build, `new
 * Machine(config)` and the Simulations and hosts built on it included, instantiate it without loading
 * again. Without `wasm` it loads the packaged build; with `wasm` (bytes, a module, or a URL such as the
 * one a bundler gives for "memvirt/wasm/release.wasm") that core stands for the build.
 */
export async function loadCore(
  options: { build?: BuildName; wasm?: WasmSource } = {},
): Promise<WebAssembly.Module> {
  const build = options.build ?? defaultBuild();
  let module = options.wasm === undefined ? modules.get(build) : await compile(options.wasm);
  if (!module) {
    const fs = nodeFs();
    module = await WebAssembly.compile(fs ? readPackaged(fs, build) : await readUrl(packagedWasmUrl(build)));
  }
  modules.set(build, module);
  return module;
}

/** The synchronous path: a module or bytes given, a build already loaded, or Node's file system. */
export function coreModuleSync(build: BuildName, wasm?: WasmSource): WebAssembly.Module {
  if (wasm instanceof WebAssembly.Module) return wasm;
  const fs = nodeFs();
  if (wasm !== undefined && !isUrl(wasm)) return new WebAssembly.Module(wasm);
  if (wasm !== undefined) {
    const url = resolveUrl(wasm);
    if (url.protocol === "file:" && fs) return new WebAssembly.Module(fs.readFileSync(url));
    throw new MemvirtError(
      `memvirt: ${url} loads asynchronously: use \`await Machine.create(config, { wasm })\``,
      1,
    );
  }
  let module = modules.get(build);
  if (!module) {
    if (!fs) {
      throw new MemvirtError(
        `memvirt: the ${build} core is not loaded; outside Node, create machines with \`await Machine.create(config)\` (or call \`await loadCore()\` once first)`,
        1,
      );
    }
    module = new WebAssembly.Module(readPackaged(fs, build));
    modules.set(build, module);
  }
  return module;
}

function imports(build: BuildName) {
  return {
    env: {
      abort(_message: number, _file: number, line: number, column: number) {
        throw new Error(`memvirt core (${build} build) assertion failed at line ${line}:${column}`);
      },
    },
  };
}

/** A fresh instance (its own linear memory), synchronously: Node, workers, or a module at hand. */
export function instantiateCore(build: BuildName = defaultBuild(), wasm?: WasmSource): CoreExports {
  const { exports } = instantiateSync<Record<string, unknown>>(coreModuleSync(build, wasm), imports(build));
  return exports as unknown as CoreExports;
}

/** A fresh instance, asynchronously: every host, a browser's main thread included. */
export async function instantiateCoreAsync(
  build: BuildName = defaultBuild(),
  wasm?: WasmSource,
): Promise<CoreExports> {
  // A core given here serves this instance only; loadCore makes one the build's core.
  const module = wasm === undefined ? await loadCore({ build }) : await compile(wasm);
  const { exports } = await instantiate<Record<string, unknown>>(module, imports(build));
  return exports as unknown as CoreExports;
}
