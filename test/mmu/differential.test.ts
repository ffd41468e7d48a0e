// Differential property tests: the WebAssembly core (Machine, the build MEMVIRT_BUILD picks) against
// the TypeScript reference model (RefMachine) on random machines, page-table forests, registers and
// operation sequences. docs/MODEL.md is the contract both follow exactly, so every access result,
// instruction outcome, statistic and page-table word (A/D updates) must be identical.
//
// FC_SEED fixes fast-check's seed (CI uses the constant below); FC_RUNS_SCALE scales every numRuns
// (e.g. 10 for a long local soak). On failure fast-check prints the seed, the shrunk scenario and the
// first operation where the two implementations part.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Machine } from "../../src/core/machine.js";
import type { AccessResult, Regs, Stats } from "../../src/core/types.js";
import { RefMachine } from "../../src/reference/index.js";
import { hostileScenarioArb, type Operation, type Scenario, scenarioArb } from "./arbitraries.js";

const SEED = Number(process.env.FC_SEED ?? 0x6d656d76);
const SCALE = Number(process.env.FC_RUNS_SCALE ?? 1);
const runs = (n: number) => Math.max(1, Math.round(n * SCALE));

/** Frames a scenario backs stay far below this, and a small directory makes each core cheap to build. */
const CORE_OPTIONS = { backedFramesLog2: 8 };

interface Pair {
  core: Machine;
  ref: RefMachine;
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
  return { core, ref };
}

type Outcome = AccessResult | boolean | null;

/** An operation made absolute: CR4 toggles and entry flips applied to the value current before it runs. */
type AbsoluteOperation =
  | Exclude<Operation, { op: "movCr4" } | { op: "flip" }>
  | { op: "movCr4"; cpu: number; value: bigint };

function absolute(op: Operation, ref: RefMachine): AbsoluteOperation {
  if (op.op === "movCr4") return { op: "movCr4", cpu: op.cpu, value: ref.getRegs(op.cpu).cr4 ^ op.toggle };
  if (op.op === "flip") return { op: "write", pa: op.pa, value: ref.readPhys64(op.pa) ^ op.mask };
  return op;
}

/** Runs one operation on one implementation. */
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

function show(value: unknown): string {
  return fc.stringify(value);
}

/** Registers as MODEL.md §2 defines them (CR3 bit 63 is never stored). */
function architecturalRegs(regs: Regs): Regs {
  return { ...regs, cr3: regs.cr3 & ~(1n << 63n) };
}

interface RunSummary {
  accesses: number;
  stats: Stats;
}

/**
 * Runs a scenario on both implementations and throws at the first difference: an access result, an
 * instruction's #GP verdict, then the final statistics, registers and page-table words.
 */
function runDifferential(scenario: Scenario): RunSummary {
  const { core, ref } = load(scenario);
  let accesses = 0;
  scenario.ops.forEach((relative, step) => {
    if (relative.op === "access") accesses++;
    // Relative operations read the reference's current value, so both receive the same absolute one.
    const op = absolute(relative, ref);
    const expected = apply(ref, op);
    const actual = apply(core, op);
    if (show(actual) !== show(expected)) {
      throw new Error(
        `step ${step}: ${show(op)}\n  reference: ${show(expected)}\n  core:      ${show(actual)}`,
      );
    }
  });
  const stats = ref.stats();
  expect(core.stats(), "final statistics").toEqual(stats);
  for (let cpu = 0; cpu < scenario.config.cpus; cpu++) {
    expect(architecturalRegs(core.getRegs(cpu)), `cpu ${cpu} registers`).toEqual(
      architecturalRegs(ref.getRegs(cpu)),
    );
  }
  for (const table of scenario.tables) {
    for (let index = 0n; index < 512n; index++) {
      const pa = table + index * 8n;
      const expected = ref.readPhys64(pa);
      const actual = core.readPhys64(pa);
      if (actual !== expected) {
        throw new Error(
          `final word at 0x${pa.toString(16)}: reference 0x${expected.toString(16)}, core 0x${actual.toString(16)}`,
        );
      }
    }
  }
  return { accesses, stats };
}

/** Accesses counted over every run of a property, so the file can show how much it covered. */
function counting(): { add: (n: number) => void; total: () => number } {
  let total = 0;
  return { add: (n) => (total += n), total: () => total };
}

describe("differential: WebAssembly core vs reference model (MODEL.md)", () => {
  it("the core agrees with the reference model on random page tables, registers and access sequences", () => {
    const covered = counting();
    fc.assert(
      fc.property(scenarioArb({ minOps: 20, maxOps: 200 }), (scenario) => {
        covered.add(runDifferential(scenario).accesses);
      }),
      { seed: SEED, numRuns: runs(Number(process.env.FC_RUNS_FOREST ?? 200)) },
    );
    console.log(`forest property: ${covered.total()} accesses`);
  });

  it("the walker never traps or hangs on random page-table memory and random control registers", () => {
    const covered = counting();
    fc.assert(
      fc.property(hostileScenarioArb({ minOps: 5, maxOps: 40 }), (scenario) => {
        covered.add(runDifferential(scenario).accesses);
      }),
      { seed: SEED ^ 0x5a5a, numRuns: runs(Number(process.env.FC_RUNS_HOSTILE ?? 200)) },
    );
    console.log(`hostile property: ${covered.total()} accesses`);
  });

  it("a configuration and seed run twice give identical results and statistics", () => {
    fc.assert(
      fc.property(scenarioArb({ minOps: 50, maxOps: 200, policy: "random" }), (scenario) => {
        const first = runDifferential(scenario);
        const second = runDifferential(scenario);
        expect(second.stats).toEqual(first.stats);
      }),
      { seed: SEED ^ 0x1234, numRuns: runs(20) },
    );
  });
});
