// Loads the WebAssembly core with @assemblyscript/loader, the same way in Node and in a browser. Two
// builds exist: release (O3, no assertions) for speed and debug (assertions, source map) for tests.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { instantiateSync } from "@assemblyscript/loader";

export type BuildName = "release" | "debug";

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
  vmEnter(
    cpu: number,
    nestedMode: number,
    root: bigint,
    nestedLevels: number,
    vpid: number,
    nestedAd: number,
  ): number;
  vmLeave(cpu: number): void;
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
  textParsedBytes(): number;
  textParsedLines(): number;
  textParseError(): number;
  textParseErrorLine(): number;
  textEofSeen(): number;
  textResetEof(seen: number): void;
  saveCoreGlobals(): number;
  restoreCoreGlobals(): number;
}

let packageRoot: string | undefined;

/** The checkout or installed package that holds build/: the nearest ancestor with a package.json. */
function findPackageRoot(): string {
  if (packageRoot) return packageRoot;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error("memvirt: cannot find the package root (package.json) above the core loader");
    dir = parent;
  }
  packageRoot = dir;
  return dir;
}

const modules = new Map<BuildName, WebAssembly.Module>();

/** The build the tests and tools use unless told otherwise: MEMVIRT_BUILD=debug|release. */
export function defaultBuild(): BuildName {
  return process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";
}

export function wasmPath(build: BuildName): string {
  return join(findPackageRoot(), "build", `${build}.wasm`);
}

/** Compiles a build once per process; each machine gets its own instance (and linear memory). */
export function coreModule(build: BuildName, bytes?: BufferSource): WebAssembly.Module {
  if (bytes) return new WebAssembly.Module(bytes);
  let module = modules.get(build);
  if (!module) {
    const path = wasmPath(build);
    if (!existsSync(path)) {
      throw new Error(`memvirt: ${path} is missing; run \`npm run build\` first`);
    }
    module = new WebAssembly.Module(readFileSync(path));
    modules.set(build, module);
  }
  return module;
}

export function instantiateCore(build: BuildName = defaultBuild(), bytes?: BufferSource): CoreExports {
  const { exports } = instantiateSync<Record<string, unknown>>(coreModule(build, bytes), {
    env: {
      abort(_message: number, _file: number, line: number, column: number) {
        throw new Error(`memvirt core (${build} build) assertion failed at line ${line}:${column}`);
      },
    },
  });
  return exports as unknown as CoreExports;
}
