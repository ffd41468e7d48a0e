import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain ES module script, without type declarations
import { GENERATED, generate, LayoutError, parse, render } from "../../scripts/generate-layout.mjs";
import * as layout from "../../src/core/layout.js";
import * as statsLayout from "../../src/core/stats-layout.js";

/** The module the generator writes for an AssemblyScript source, evaluated. */
function evaluate(source: string): Record<string, unknown> {
  const ts = render(parse(source, "test.ts"), "test.ts") as string;
  const js = ts
    .replace(/^export type .*$/gm, "")
    .replace(/ as const;/g, ";")
    .replace(/^export /gm, "");
  const names = [...ts.matchAll(/^export const (\w+)/gm)].map((m) => m[1]);
  return Function(`"use strict"; ${js}; return { ${names.join(", ")} };`)();
}

describe("the memory map has one source: assembly/ generates the host's copy", () => {
  it("a constant is carried with its value: hex, shifts, ORs and earlier constants, casts dropped", () => {
    const values = evaluate(
      [
        "export const BASE: u32 = 0x1e30000;",
        "export const SLOTS: u32 = 256;",
        "export const SIZE: u32 = BASE + SLOTS * 32;",
        "export const TOP_BIT: u32 = 1 << 31;",
        "export const WIDE: u64 = <u64>1 << 40 | 7;",
      ].join("\n"),
    );
    expect(values).toEqual({
      BASE: 0x1e30000,
      SLOTS: 256,
      SIZE: 0x1e30000 + 256 * 32,
      TOP_BIT: 2 ** 31,
      WIDE: 2 ** 40 + 7,
    });
  });

  it("an enum becomes its codes and, when they run 0, 1, 2..., its names in lower camel case", () => {
    const values = evaluate(
      [
        "export const enum ExitReason {",
        "  None = 0,",
        "  /** a comment */",
        "  PageFault,",
        "  GeneralProtection,",
        "}",
        "export const enum FaultType {",
        "  None = 0,",
        "  PageFault = 14,",
        "}",
      ].join("\n"),
    );
    expect(values.ExitReason).toEqual({ None: 0, PageFault: 1, GeneralProtection: 2 });
    expect(values.EXIT_REASON_NAMES).toEqual(["none", "pageFault", "generalProtection"]);
    expect(values.FaultType).toEqual({ None: 0, PageFault: 14 });
    expect(values.FAULT_TYPE_NAMES).toBeUndefined();
  });

  it("functions and imports are left out, and a name that is not an earlier constant is an error at its line", () => {
    const values = evaluate(
      [
        'import { X } from "./other";',
        "@inline export function bump(index: u32): void {",
        "  const p = index << 3;",
        "}",
        "export const AFTER: u32 = 1;",
      ].join("\n"),
    );
    expect(values).toEqual({ AFTER: 1 });
    expect(() => parse("export const A: u32 = 1;\nexport const B: u32 = MISSING + 1;", "core.ts")).toThrow(
      new LayoutError("core.ts:2: MISSING is not an earlier constant of this file"),
    );
    expect(() => parse('export const NAME: string = "x";', "core.ts")).toThrow(LayoutError);
  });

  it("src/core/layout.ts and stats-layout.ts are what the generator makes of assembly/ now, marked as generated", () => {
    for (const { source, target } of GENERATED as { source: string; target: string }[]) {
      const text = readFileSync(new URL(`../../${target}`, import.meta.url), "utf8");
      expect(text.startsWith(`// GENERATED from ${source}`)).toBe(true);
      expect(text).toBe(generate(source));
    }
    expect(layout.ExitReason.EptViolation).toBe(layout.EXIT_REASON_NAMES.indexOf("eptViolation"));
    expect(statsLayout.S_COUNT).toBeGreaterThan(statsLayout.S_IO_INVALIDATIONS);
  });

  it("the fixed regions do not overlap and end where the sized regions start", () => {
    const regions: [string, number, number][] = [
      ["control", layout.CTRL_BASE, layout.CTRL_SIZE],
      ["statistics", layout.STATS_BASE, layout.STATS_SIZE],
      ["records", layout.RECORDS_BASE, layout.RECORD_CAPACITY * layout.RECORD_SIZE],
      ["frame memo", layout.FRAME_MEMO_BASE, layout.FRAME_MEMO_SLOTS * 16],
      ["nested memo", layout.NESTED_MEMO_BASE, 2 * layout.NESTED_MEMO_SLOTS * layout.NESTED_MEMO_SIZE],
      ["walk memo", layout.WALK_MEMO_BASE, layout.WALK_MEMO_SLOTS * layout.WALK_MEMO_SIZE],
    ];
    regions.sort((a, b) => a[1] - b[1]);
    for (let i = 1; i < regions.length; i++) {
      const [previous, base, size] = regions[i - 1];
      expect(base + size, `${previous} overlaps ${regions[i][0]}`).toBeLessThanOrEqual(regions[i][1]);
    }
    const [, lastBase, lastSize] = regions[regions.length - 1];
    expect(lastBase + lastSize).toBeLessThanOrEqual(layout.HEAP_BASE);
    // Inside the control block: the CPU blocks, the exit record and scratch, the tables, the IOMMU.
    expect(layout.CPU_BASE + layout.MAX_CPUS * layout.CPU_STRIDE).toBeLessThanOrEqual(layout.EXIT_BASE);
    expect(layout.ROOT_TABLE + layout.CONTEXT_CAPACITY * 8).toBeLessThanOrEqual(
      layout.IOMMU_BASE - layout.CTRL_BASE,
    );
    expect(layout.IOMMU_BASE + layout.IOMMU_SIZE).toBeLessThanOrEqual(layout.CTRL_BASE + layout.CTRL_SIZE);
    expect(layout.IO_FAULT_RECORD_BASE + layout.IO_MAX_FAULT_RECORDS * 16).toBeLessThanOrEqual(
      layout.IOMMU_SIZE,
    );
    expect(layout.IO_WALK_SCRATCH + 5 * 32).toBeLessThanOrEqual(0x200);
  });
});
