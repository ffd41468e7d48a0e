// Differential property tests: the WebAssembly core (Machine, the build MEMVIRT_BUILD picks) against
// the TypeScript reference model (RefMachine) on random machines, page-table forests, registers and
// operation sequences. docs/MODEL.md is the contract both follow exactly, so every access result,
// instruction outcome, statistic and page-table word (A/D updates) must be identical.
//
// A core costs ~12 ms to build (its fixed linear-memory regions), so 100,000 fresh machines would take
// 20 minutes. The high-volume property therefore keeps a machine pair alive across cases: a case is a
// short operation sequence continuing the pair's history, and every ROTATE cases a new pair starts from
// a new random scenario. Both implementations see exactly the same history, so any difference is a
// real one; on failure the whole history is replayed on fresh pairs and minimized into a standalone
// reproducer. The fresh-pair properties keep fast-check's own shrinking.
//
// Environment: FC_SEED fixes the seed (CI uses the constant below), FC_RUNS_SCALE scales every numRuns
// (e.g. 10 for a long local soak). On failure fast-check prints the seed and the counterexample.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RefMachine } from "../../reference/index.js";
import { Machine } from "../../src/core/machine.js";
import type { AccessResult, Regs, Stats } from "../../src/core/types.js";
import { runs } from "../fc-runs.js";
import {
  hostileScenarioArb,
  type Operation,
  type OperationSpec,
  operationSpecArb,
  placeOperations,
  type Scenario,
  scenarioArb,
} from "./arbitraries.js";

const SEED = Number(process.env.FC_SEED ?? 0x6d656d76);

/** Scenarios back a few dozen frames at most; a small frame directory makes each core cheaper to build. */
const CORE_OPTIONS = { backedFramesLog2: 8 };

/** Continuation cases per long-lived pair before a new scenario (and pair) starts. */
const ROTATE = 200;

// --- running a scenario on both implementations -----------------------------------------------------

interface HotTranslation {
  page: bigint;
  cpu: number;
  kind: number;
  flags: number;
}

interface Pair {
  core: Machine;
  ref: RefMachine;
  /** Recent successful translations (one per page, most recent last), for `hot` addresses. */
  hot: HotTranslation[];
}

function load(scenario: Scenario): Pair {
  const core = new Machine(scenario.config, CORE_OPTIONS);
  const ref = new RefMachine(scenario.config);
  for (const [pa, value] of scenario.memory) {
    core.writePhys64(pa, value);
    ref.writePhys64(pa, value);
  }
  // The core starts with zeroed registers and the reference in long mode: load every register on both.
  scenario.regs.forEach((regs, cpu) => {
    core.setRegs(cpu, regs);
    ref.setRegs(cpu, regs);
  });
  return { core, ref, hot: [] };
}

/** An operation with its relative forms (CR4 toggle, entry flip, hot page) resolved: both get the same. */
type AbsoluteOperation = Exclude<Operation, { op: "toggleCr4" } | { op: "switchPcid" } | { op: "flip" }>;

/** How many recently translated pages a run remembers for `hot` addresses. */
const HOT_PAGES = 16;

function absolute(op: Operation, pair: Pair): AbsoluteOperation {
  const { ref, hot } = pair;
  switch (op.op) {
    case "toggleCr4":
      return { op: "movCr4", cpu: op.cpu, value: ref.getRegs(op.cpu).cr4 ^ op.toggle };
    case "switchPcid": {
      const root = ref.getRegs(op.cpu).cr3 & ~0xfffn;
      return { op: "movCr3", cpu: op.cpu, value: root | BigInt(op.pcid) | (op.noFlush ? 1n << 63n : 0n) };
    }
    case "flip":
      return { op: "write", pa: op.pa, value: ref.readPhys64(op.pa) ^ op.mask };
    case "access": {
      const { hot: back, repeat, ...rest } = op;
      if (back === undefined || hot.length === 0) return rest;
      const recent = hot[hot.length - 1 - (back % hot.length)];
      const la = recent.page | (op.la & 0xfffn);
      return repeat
        ? { ...rest, la, cpu: recent.cpu, kind: recent.kind, flags: recent.flags }
        : { ...rest, la };
    }
    case "invlpg":
    case "invpcid": {
      const { hot: back, ...rest } = op;
      if (back === undefined || hot.length === 0) return rest;
      return { ...rest, la: hot[hot.length - 1 - (back % hot.length)].page | (op.la & 0xfffn) };
    }
    default:
      return op;
  }
}

/** Remembers a successful translation for later `hot` addresses. */
function noteTranslation(pair: Pair, op: { la: bigint; cpu: number; kind: number; flags: number }): void {
  const page = op.la & ~0xfffn;
  const at = pair.hot.findIndex((entry) => entry.page === page);
  if (at >= 0) pair.hot.splice(at, 1);
  pair.hot.push({ page, cpu: op.cpu, kind: op.kind, flags: op.flags });
  if (pair.hot.length > HOT_PAGES) pair.hot.shift();
}

type Outcome = AccessResult | boolean | null;

function apply(machine: Machine | RefMachine, op: AbsoluteOperation): Outcome {
  switch (op.op) {
    case "access":
      return machine instanceof Machine
        ? machine.translate(op.cpu, op.la, op.kind, op.flags, op.retry)
        : machine.access(op.cpu, op.la, op.kind, op.flags, op.retry);
    case "movCr3":
      machine.movCr3(op.cpu, op.value);
      return null;
    case "movCr4":
      return machine.movCr4(op.cpu, op.value);
    case "invlpg":
      machine.invlpg(op.cpu, op.la);
      return null;
    case "invpcid":
      return machine.invpcid(op.cpu, op.type, op.pcid, op.la);
    case "flushAll":
      machine.flushAll(op.cpu);
      return null;
    case "write":
      machine.writePhys64(op.pa, op.value);
      return null;
    case "setRegs":
      machine.setRegs(op.cpu, op.regs);
      return null;
  }
}

/** A difference between the two implementations (as opposed to a bug in the test). */
class Divergence extends Error {
  override name = "Divergence";
}

const hex = (value: bigint) => `0x${value.toString(16)}`;

function show(value: unknown): string {
  return JSON.stringify(value, (_, v) => (typeof v === "bigint" ? hex(v) : v));
}

/**
 * Runs operations on a pair, throwing a Divergence at the first different outcome. Each operation is
 * appended to `history` in absolute form before it runs, so a history ends with the diverging one.
 */
function runOperations(pair: Pair, ops: Operation[], history: AbsoluteOperation[] = []): AbsoluteOperation[] {
  for (const relative of ops) {
    // Relative operations read the reference's current value, so both receive the same absolute one.
    const op = absolute(relative, pair);
    const step = history.length;
    history.push(op);
    const outcome = apply(pair.ref, op);
    if (op.op === "access" && outcome && typeof outcome === "object" && outcome.fault === 0)
      noteTranslation(pair, op);
    const expected = show(outcome);
    let actual: string;
    try {
      actual = show(apply(pair.core, op));
    } catch (error) {
      throw new Divergence(`step ${step}: ${show(op)}\n  the core threw: ${String(error)}`);
    }
    if (actual !== expected) {
      throw new Divergence(`step ${step}: ${show(op)}\n  reference: ${expected}\n  core:      ${actual}`);
    }
  }
  return history;
}

function compareStats(pair: Pair, when: string): Stats {
  const expected = pair.ref.stats();
  const actual = pair.core.stats();
  if (show(actual) !== show(expected)) {
    const diffs: string[] = [];
    const walk = (a: unknown, b: unknown, path: string) => {
      if (typeof a === "object" && a && typeof b === "object" && b) {
        for (const key of Object.keys(a))
          walk((a as never)[key], (b as never)[key], path ? `${path}.${key}` : key);
      } else if (a !== b) {
        diffs.push(`${path}: reference ${String(b)}, core ${String(a)}`);
      }
    };
    walk(actual, expected, "");
    throw new Divergence(`statistics differ ${when}:\n  ${diffs.join("\n  ")}`);
  }
  return expected;
}

/** Registers as MODEL.md §2 defines them (CR3 bit 63 is never stored). */
function architecturalRegs(regs: Regs): Regs {
  return { ...regs, cr3: regs.cr3 & ~(1n << 63n) };
}

function compareFinalState(pair: Pair, scenario: Scenario): void {
  for (let cpu = 0; cpu < scenario.config.cpus; cpu++) {
    const expected = show(architecturalRegs(pair.ref.getRegs(cpu)));
    const actual = show(architecturalRegs(pair.core.getRegs(cpu)));
    if (actual !== expected)
      throw new Divergence(`cpu ${cpu} registers: reference ${expected}, core ${actual}`);
  }
  // Every word of every table: A/D updates land exactly where and when MODEL.md §5.3 says.
  for (const table of scenario.tables) {
    for (let index = 0n; index < 512n; index++) {
      const pa = table + index * 8n;
      const expected = pair.ref.readPhys64(pa);
      const actual = pair.core.readPhys64(pa);
      if (actual !== expected) {
        throw new Divergence(`final word at ${hex(pa)}: reference ${hex(expected)}, core ${hex(actual)}`);
      }
    }
  }
}

/**
 * Runs a scenario on a fresh pair and throws a Divergence at the first difference: an access result,
 * an instruction's #GP verdict, then the final statistics, registers and page-table words.
 */
function runDifferential(scenario: Scenario): { accesses: number; stats: Stats } {
  const pair = load(scenario);
  runOperations(pair, scenario.ops);
  const stats = compareStats(pair, "at the end");
  compareFinalState(pair, scenario);
  return { accesses: scenario.ops.filter((op) => op.op === "access").length, stats };
}

function diverges(scenario: Scenario): boolean {
  try {
    runDifferential(scenario);
    return false;
  } catch (error) {
    if (error instanceof Divergence) return true;
    throw error;
  }
}

// --- minimizing a failing history into a reproducer ---------------------------------------------------

/** Stops minimizing after this long: a failing CI run still ends, with the best reproducer so far. */
const MINIMIZE_BUDGET_MS = 60_000;

/** Removes chunks of a list (halves, quarters, ... single items) while `keep` still holds. */
function shrinkList<T>(items: T[], keep: (candidate: T[]) => boolean, deadline: number): T[] {
  let current = items;
  for (let chunk = Math.max(1, current.length >> 1); chunk >= 1; chunk = chunk === 1 ? 0 : chunk >> 1) {
    for (let start = 0; start < current.length && Date.now() < deadline; ) {
      const candidate = [...current.slice(0, start), ...current.slice(start + chunk)];
      if (candidate.length < current.length && keep(candidate)) current = candidate;
      else start += chunk;
    }
  }
  return current;
}

/** Simplifications of the machine itself: fewer CPUs, absent TLB levels, PSCs and caches. */
function simplerScenarios(s: Scenario): Scenario[] {
  const out: Scenario[] = [];
  const { config } = s;
  if (config.cpus > 1) {
    out.push({
      ...s,
      config: { ...config, cpus: 1 },
      regs: s.regs.slice(0, 1),
      ops: s.ops.filter((op) => !("cpu" in op) || op.cpu === 0),
    });
  }
  for (const level of ["l1d", "l1i", "l2"] as const) {
    const spec = config.tlb[level];
    if (!spec) continue;
    out.push({ ...s, config: { ...config, tlb: { ...config.tlb, [level]: null } } });
    spec.arrays.forEach((_, i) => {
      if (spec.arrays.length > 1) {
        const arrays = spec.arrays.filter((__, j) => j !== i);
        out.push({ ...s, config: { ...config, tlb: { ...config.tlb, [level]: { ...spec, arrays } } } });
      }
    });
  }
  for (const level of ["pml5", "pml4", "pdpte", "pde"] as const) {
    if (config.psc[level]) out.push({ ...s, config: { ...config, psc: { ...config.psc, [level]: null } } });
  }
  for (const level of ["l1", "l2", "llc"] as const) {
    if (config.cache[level])
      out.push({ ...s, config: { ...config, cache: { ...config.cache, [level]: null } } });
  }
  return out;
}

/** Greedy minimization on fresh pairs: machine, operations, memory frames, then memory words. */
function minimize(scenario: Scenario): Scenario {
  const deadline = Date.now() + MINIMIZE_BUDGET_MS;
  let current = scenario;
  for (let changed = true; changed && Date.now() < deadline; ) {
    changed = false;
    for (const candidate of simplerScenarios(current)) {
      if (diverges(candidate)) {
        current = candidate;
        changed = true;
        break;
      }
    }
  }
  current = { ...current, ops: shrinkList(current.ops, (ops) => diverges({ ...current, ops }), deadline) };
  const frames = [...new Set(current.memory.map(([pa]) => pa >> 12n))];
  const kept = shrinkList(
    frames,
    (candidate) =>
      diverges({ ...current, memory: current.memory.filter(([pa]) => candidate.includes(pa >> 12n)) }),
    deadline,
  );
  current = { ...current, memory: current.memory.filter(([pa]) => kept.includes(pa >> 12n)) };
  current = {
    ...current,
    memory: shrinkList(current.memory, (memory) => diverges({ ...current, memory }), deadline),
  };
  return current;
}

/** A scenario as a reviewer reads it: configuration, memory, registers, one operation per line. */
function describeScenario(s: Scenario): string {
  const lines = [
    `config: ${show(s.config)}`,
    `tables: ${s.tables.map(hex).join(" ")}`,
    "memory:",
    ...s.memory.map(([pa, value]) => `  [${hex(pa)}] = ${hex(value)}`),
    ...s.regs.map((regs, cpu) => `cpu ${cpu}: ${show(regs)}`),
    "ops:",
    ...s.ops.map((op, i) => `  ${i}: ${show(op)}`),
  ];
  return lines.join("\n");
}

// --- the long-lived pair of the high-volume property -------------------------------------------------

interface Session {
  scenario: Scenario;
  pair: Pair;
  /** Every operation run on the pair so far, absolute: with `scenario` a fresh-pair reproducer. */
  history: AbsoluteOperation[];
  cases: number;
}

class SessionRunner {
  private session: Session | null = null;
  /** Sessions started so far. */
  started = 0;
  accesses = 0;

  constructor(
    private readonly seed: number,
    private readonly rotate: number,
  ) {}

  /** Runs one continuation case; on a divergence throws with a minimized standalone reproducer. */
  run(specs: OperationSpec[]): void {
    try {
      if (!this.session || this.session.cases >= this.rotate) {
        if (this.session) compareFinalState(this.session.pair, this.session.scenario);
        this.start();
      }
      const session = this.session!;
      session.cases++;
      const ops = placeOperations(session.scenario, session.history, specs);
      for (const op of ops) if (op.op === "access") this.accesses++;
      runOperations(session.pair, ops, session.history);
      compareStats(session.pair, `after case ${session.cases} of session ${this.started - 1}`);
    } catch (error) {
      const session = this.session;
      if (!(error instanceof Divergence) || !session) throw error;
      this.session = null;
      throw new Error(this.report(session, error));
    }
  }

  /** The last session's final registers and page-table words. */
  finish(): void {
    const session = this.session;
    if (!session) return;
    this.session = null;
    try {
      compareFinalState(session.pair, session.scenario);
    } catch (error) {
      if (!(error instanceof Divergence)) throw error;
      throw new Error(this.report(session, error));
    }
  }

  /** A new pair from the next random scenario, whose own operations open the session. */
  private start(): void {
    const [scenario] = fc.sample(scenarioArb({ minOps: 20, maxOps: 200 }), {
      seed: this.seed + 7919 * this.started,
      numRuns: 1,
    });
    this.started++;
    const pair = load(scenario);
    this.session = { scenario, pair, history: [], cases: 0 };
    for (const op of scenario.ops) if (op.op === "access") this.accesses++;
    runOperations(pair, scenario.ops, this.session.history);
    compareStats(pair, `after the opening scenario of session ${this.started - 1}`);
  }

  private report(session: Session, error: Divergence): string {
    const replay: Scenario = { ...session.scenario, ops: session.history };
    const parts = [
      `${error.message}`,
      `(session ${this.started - 1}, after ${session.history.length} operations)`,
    ];
    if (diverges(replay)) {
      const minimal = minimize(replay);
      parts.push(
        `minimized standalone reproducer (fresh machines):\n${firstDivergence(minimal)}\n${describeScenario(minimal)}`,
      );
    } else {
      parts.push(`the history does not diverge on fresh machines:\n${describeScenario(replay)}`);
    }
    return parts.join("\n");
  }
}

// --- the properties -------------------------------------------------------------------------------------

/** A fresh-pair property can take this long, shrinking included, before fast-check stops it (and fails). */
const TIME_LIMIT_MS = 240_000;

/** Vitest's limit per test: generous, since CI runs both builds' suites side by side on two cores. */
const TEST_TIMEOUT_MS = 600_000;

/** The first divergence of a scenario on fresh pairs, as text. */
function firstDivergence(scenario: Scenario): string {
  try {
    runDifferential(scenario);
    return "(no divergence on fresh machines)";
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * Checks a property over fresh-pair scenarios. On failure the report is fast-check's (seed, path, shrunk
 * counterexample), followed by the shrunk counterexample minimized further (machine and memory too).
 */
function checkScenarios(
  arbitrary: fc.Arbitrary<Scenario>,
  params: { seed: number; numRuns: number },
  predicate: (scenario: Scenario) => void,
): void {
  const property: fc.IProperty<[Scenario]> = fc.property(arbitrary, predicate);
  const details = fc.check(property, {
    ...params,
    interruptAfterTimeLimit: TIME_LIMIT_MS,
    markInterruptAsFailure: true,
  });
  if (!details.failed) return;
  let message = fc.defaultReportMessage(details);
  const counterexample = details.counterexample?.[0];
  if (counterexample && diverges(counterexample)) {
    const minimal = minimize(counterexample);
    message += `\n\nminimized reproducer:\n${firstDivergence(minimal)}\n${describeScenario(minimal)}`;
  }
  throw new Error(message);
}

describe("differential: WebAssembly core vs reference model (MODEL.md)", () => {
  it(
    "the core agrees with the reference model on random page tables, registers and access sequences",
    () => {
      checkScenarios(
        scenarioArb({ minOps: 20, maxOps: 200 }),
        { seed: SEED, numRuns: runs(Number(process.env.FC_RUNS_FOREST ?? 300)) },
        (scenario) => {
          runDifferential(scenario);
        },
      );
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "the core agrees with the reference model over 100,000 cases continuing long-lived machines",
    () => {
      const runner = new SessionRunner(SEED ^ 0x2545, ROTATE);
      const specs = fc.array(operationSpecArb(), { minLength: 1, maxLength: 8 });
      fc.assert(
        fc.property(specs, (ops) => runner.run(ops)),
        // Shrinking a case of a stateful session is meaningless: the runner minimizes on fresh pairs.
        {
          seed: SEED ^ 0x9e37,
          numRuns: runs(Number(process.env.FC_RUNS_SESSION ?? 100_000)),
          endOnFailure: true,
        },
      );
      runner.finish();
      console.log(`continuation property: ${runner.started} sessions, ${runner.accesses} accesses`);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "the walker never traps or hangs on random page-table memory and random control registers",
    () => {
      // runOperations turns an exception from the core (an assertion of the debug build, a trap) into a
      // divergence; a hang would time the test out.
      checkScenarios(
        hostileScenarioArb({ minOps: 5, maxOps: 40 }),
        { seed: SEED ^ 0x5a5a, numRuns: runs(Number(process.env.FC_RUNS_HOSTILE ?? 300)) },
        (scenario) => {
          runDifferential(scenario);
        },
      );
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "a configuration and seed run twice give identical results and statistics",
    () => {
      checkScenarios(
        scenarioArb({ minOps: 50, maxOps: 200, policy: "random", tame: true }),
        { seed: SEED ^ 0x1234, numRuns: runs(20) },
        (scenario) => {
          const first = runDifferential(scenario);
          const second = runDifferential(scenario);
          expect(second.stats).toEqual(first.stats);
        },
      );
    },
    TEST_TIMEOUT_MS,
  );
});
