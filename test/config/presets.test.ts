// The CPU presets of issue 12 (presets/*.json): each file's shape, its citations (every number of its
// config has a source or a named assumption), that memvirt's config validation takes it unchanged, and
// that the machine it describes runs: a trace replays with plausible, deterministic statistics, and the
// TLB capacities the files give are the capacities the core simulates.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { docPath, readPresets, renderPresets, spliceDoc } from "../../scripts/presets-doc.mjs";
import { defaultConfig, parseBytes, resolveConfig } from "../../src/config/config.js";
import type { Stats } from "../../src/core/types.js";
import { Simulation } from "../../src/runner/simulation.js";
import { replayTrace } from "../../src/trace/replay.js";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

interface Preset {
  name: string;
  description: string;
  sources: { id: string; title: string; where: string }[];
  assumptions: string[];
  provenance: Record<string, string[]>;
  config: { [key: string]: Json };
}

const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";
const SIX = ["icelake", "sapphire-rapids", "skylake", "zen2", "zen3", "zen4"];
const presetsDir = new URL("../../presets/", import.meta.url);
const entries = readdirSync(presetsDir).sort();
const presets: Preset[] = entries
  .filter((file) => file.endsWith(".json"))
  .map((file) => JSON.parse(readFileSync(new URL(file, presetsDir), "utf8")));
const byName = (name: string) => presets.find((preset) => preset.name === name)!;

/** Every number and every null (a structure switched off) in a config, by path: `cache.l1.size`... */
function leaves(value: Json, path = ""): string[] {
  if (Array.isArray(value)) return value.flatMap((item, i) => leaves(item, `${path}[${i}]`));
  if (value !== null && typeof value === "object")
    return Object.entries(value).flatMap(([key, item]) => leaves(item, path ? `${path}.${key}` : key));
  return typeof value === "number" || value === null ? [path] : [];
}

/** Paths of every value and object in a config, the ones a provenance key may name. */
function paths(value: Json, path = ""): string[] {
  const own = path ? [path] : [];
  if (Array.isArray(value)) return [...own, ...value.flatMap((item, i) => paths(item, `${path}[${i}]`))];
  if (value !== null && typeof value === "object")
    return [
      ...own,
      ...Object.entries(value).flatMap(([key, item]) => paths(item, path ? `${path}.${key}` : key)),
    ];
  return own;
}

/** `prefix` is `path` or one of its ancestors. */
const covers = (prefix: string, path: string) =>
  path === prefix || path.startsWith(`${prefix}.`) || path.startsWith(`${prefix}[`);

describe("presets/ files", () => {
  it("holds one JSON file for each of the six CPUs issue 12 names, and nothing else", () => {
    expect(entries).toEqual(SIX.map((name) => `${name}.json`));
  });

  it("docs/presets.md shows what the files hold (node scripts/presets-doc.mjs --write regenerates it)", () => {
    const doc = readFileSync(docPath, "utf8");
    expect(doc).toBe(spliceDoc(doc, renderPresets(readPresets())));
  });
});

describe.each(SIX)("preset %s", (name) => {
  const preset = byName(name);

  it("has the preset shape: name, description, sources {id, title, where}, assumptions, provenance, config", () => {
    expect(Object.keys(preset).sort()).toEqual([
      "assumptions",
      "config",
      "description",
      "name",
      "provenance",
      "sources",
    ]);
    expect(preset.name).toBe(name);
    expect(preset.description.length).toBeGreaterThan(20);
    expect(preset.sources.length).toBeGreaterThan(0);
    for (const source of preset.sources) {
      expect(Object.keys(source).sort()).toEqual(["id", "title", "where"]);
      expect(source.id).toMatch(/^[a-z0-9][a-z0-9-]*$/);
      expect(source.title.length).toBeGreaterThan(10);
      expect(source.where.length).toBeGreaterThan(10);
    }
    expect(new Set(preset.sources.map((source) => source.id)).size).toBe(preset.sources.length);
    expect(preset.assumptions.length).toBeGreaterThan(0);
    for (const assumption of preset.assumptions) expect(assumption.length).toBeGreaterThan(20);
    expect(Object.keys(preset.config).sort()).toEqual(["cache", "nestedTlb", "psc", "tlb"]);
  });

  it("cites only sources it lists, and lists only sources it cites", () => {
    const ids = new Set(preset.sources.map((source) => source.id));
    const fromProvenance = Object.values(preset.provenance)
      .flat()
      .filter((id) => id !== "assumption");
    const fromText = preset.assumptions.flatMap((text) =>
      [...text.matchAll(/(?<!\w)\[([a-z0-9][a-z0-9-]*)\]/g)].map((match) => match[1]),
    );
    for (const id of [...fromProvenance, ...fromText]) expect(ids, `cited source ${id}`).toContain(id);
    const cited = new Set([...fromProvenance, ...fromText]);
    for (const id of ids) expect(cited, `listed source ${id}`).toContain(id);
  });

  it("gives every number of its config a source or an assumption that names it", () => {
    const keys = Object.keys(preset.provenance);
    const configPaths = new Set(paths(preset.config));
    for (const key of keys) {
      expect(configPaths, `provenance key ${key}`).toContain(key);
      expect(preset.provenance[key].length, `provenance of ${key}`).toBeGreaterThan(0);
    }
    const named = preset.assumptions.flatMap((text) =>
      [...text.matchAll(/`([^`]+)`/g)].map((match) => match[1]),
    );
    for (const leaf of leaves(preset.config)) {
      const key = keys.filter((k) => covers(k, leaf)).sort((a, b) => b.length - a.length)[0];
      expect(key, `${leaf} has no provenance`).toBeDefined();
      if (preset.provenance[key].includes("assumption"))
        expect(
          named.some((path) => covers(path, key)),
          `${key} is an assumption no assumption names`,
        ).toBe(true);
    }
  });

  it("resolves through resolveConfig with every structure exactly as the file gives it", () => {
    const { tlb, psc, nestedTlb, cache } = preset.config as unknown as {
      tlb: unknown;
      psc: unknown;
      nestedTlb: unknown;
      cache: Record<"l1" | "l2" | "llc", { size: string; ways: number; latency: number }> & { dram: number };
    };
    const { machine } = resolveConfig(preset.config);
    expect(machine.tlb).toEqual(tlb);
    expect(machine.psc).toEqual(psc);
    expect(machine.nestedPsc).toEqual(psc);
    expect(machine.nestedTlb).toEqual(nestedTlb);
    for (const level of ["l1", "l2", "llc"] as const)
      expect(machine.cache[level]).toEqual({ ...cache[level], size: parseBytes(cache[level].size, level) });
    expect(machine.cache.dramLatency).toBe(cache.dram);
  });
});

describe("the skylake preset", () => {
  it("is memvirt's built-in default: it resolves to exactly defaultConfig()", () => {
    expect(resolveConfig(byName("skylake").config)).toEqual(defaultConfig());
  });
});

const fixture = new URL("../fixtures/ls-head.lk", import.meta.url).pathname;
const temp = mkdtempSync(join(tmpdir(), "memvirt-presets-"));

async function replay(name: string, trace: string): Promise<Stats> {
  const simulation = new Simulation(resolveConfig(byName(name).config), { build });
  simulation.start();
  await replayTrace(simulation, trace, "lackey");
  return simulation.stats();
}

/** A Lackey trace that loads one word from each of `pages` consecutive 4K pages, `rounds` times over. */
function cyclicTrace(pages: number, rounds: number): string {
  const path = join(temp, `cyclic-${pages}x${rounds}.lk`);
  const line = (page: number) => ` L ${(0x10000000 + page * 4096).toString(16)},8`;
  const lines = Array.from({ length: rounds * pages }, (_, i) => line(i % pages));
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

describe("a native run on each preset", () => {
  it.each(SIX)("%s replays ls-head.lk with plausible statistics, identical across two runs", async (name) => {
    const first = await replay(name, fixture);
    expect(first.accesses).toBeGreaterThan(3000);
    expect(first.tlb.l1d.misses).toBeGreaterThan(0);
    expect(first.tlb.l1d.hits).toBeGreaterThan(first.tlb.l1d.misses);
    expect(first.tlb.l2.misses).toBeLessThanOrEqual(first.tlb.l1d.misses + first.tlb.l1i.misses);
    expect(first.walks).toBeGreaterThan(0);
    expect(first.walkRefs).toBeGreaterThanOrEqual(first.walks);
    expect(first.cycles).toBeGreaterThan(first.accesses);
    expect(await replay(name, fixture)).toEqual(first);
  });

  it("zen2 and zen3 share their TLBs, so they miss alike; their caches alone make the cycles differ", async () => {
    const [zen2, zen3] = [await replay("zen2", fixture), await replay("zen3", fixture)];
    expect({ tlb: zen3.tlb, walks: zen3.walks, psc: zen3.psc }).toEqual({
      tlb: zen2.tlb,
      walks: zen2.walks,
      psc: zen2.psc,
    });
    expect(zen3.cycles).not.toBe(zen2.cycles);
  });

  it("70 pages in turn fit Zen 4's 72-entry L1 DTLB (compulsory misses only) and thrash Zen 2's 64 LRU entries", async () => {
    const trace = cyclicTrace(70, 4);
    const [zen2, zen4] = [await replay("zen2", trace), await replay("zen4", trace)];
    expect(zen4.tlb.l1d.misses).toBe(70);
    expect(zen2.tlb.l1d.misses).toBe(280);
    expect(zen2.tlb.l2.hits).toBe(210);
  });

  it("1,800 pages in turn fit a 2048-entry 16-way STLB (Sapphire Rapids, Ice Lake) and thrash Skylake's 1536 12-way", async () => {
    const trace = cyclicTrace(1800, 3);
    const results = await Promise.all(
      ["skylake", "sapphire-rapids", "icelake"].map((name) => replay(name, trace)),
    );
    const [skylake, sapphireRapids, icelake] = results;
    expect(skylake.tlb.l2.misses).toBe(5400);
    expect(sapphireRapids.tlb.l2.misses).toBe(1800);
    expect(icelake.tlb.l2.misses).toBe(1800);
    expect(sapphireRapids.walks).toBe(1800);
  });
});
