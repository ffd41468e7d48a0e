// The playground (web/) in real headless Chromium (Debian's, through playwright-core): the site built
// once with Vite into a temporary directory, served by `memvirt web --dir`, each view driven as a user
// would. Runs once (the "web" vitest project), not per Wasm build: the site bundles the release core.
// Screenshots of every view go to test-artifacts/web/ (not committed).

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { WORKLOAD_GROUPS } from "../../src/cli/options.js";
import { configToJson, resolveConfig } from "../../src/config/config.js";
import { buildReport, type RunReport } from "../../src/report/report.js";
import { Simulation } from "../../src/runner/simulation.js";
import { replayTrace } from "../../src/trace/replay.js";
import { launchChromium } from "../chromium.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const ARTIFACTS = join(ROOT, "test-artifacts", "web");
const ZIPF = { workload: "zipf", records: "200000", footprint: "64M", seed: "7" };
const zipfFlags = Object.entries(ZIPF).flatMap(([key, value]) => [`--${key}`, value]);

let work: string;
let server: ChildProcess;
let origin: string;
let browser: Browser;
let context: BrowserContext;
const problems: string[] = [];
const outside: string[] = [];
const timings: string[] = [];

/** The CLI's answer for the run the first test makes in the page. */
let cli: { stdout: string; report: RunReport; html: string };

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "memvirt-web-"));
  mkdirSync(ARTIFACTS, { recursive: true });
  let started = performance.now();
  await build({
    configFile: join(ROOT, "web", "vite.config.ts"),
    logLevel: "error",
    build: { outDir: join(work, "site") },
  });
  timings.push(`vite build ${((performance.now() - started) / 1000).toFixed(1)} s`);

  writeFileSync(join(work, "ept.json"), JSON.stringify({ mode: "ept" }));
  const stdout = execFileSync(
    process.execPath,
    [
      join(ROOT, "bin", "memvirt.js"),
      "run",
      "--config",
      "ept.json",
      ...zipfFlags,
      "--json",
      "--report",
      "cli.html",
    ],
    { cwd: work, encoding: "utf8" },
  );
  cli = { stdout, report: JSON.parse(stdout), html: readFileSync(join(work, "cli.html"), "utf8") };

  server = spawn(
    process.execPath,
    [join(ROOT, "bin", "memvirt.js"), "web", "--dir", join(work, "site"), "--port", "0"],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  origin = await new Promise<string>((done, fail) => {
    let text = "";
    server.stdout?.on("data", (chunk) => {
      text += String(chunk);
      const url = /http:\/\/127\.0\.0\.1:\d+\//.exec(text);
      if (url) done(url[0]);
    });
    server.once("exit", (code) => fail(new Error(`memvirt web exited with ${code}: ${text}`)));
  });
  started = performance.now();
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  context.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(origin) && !/^(blob|data):/.test(url)) outside.push(url);
  });
  timings.push(`chromium ${((performance.now() - started) / 1000).toFixed(1)} s`);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  server?.kill();
  if (work) rmSync(work, { recursive: true, force: true });
  console.log(timings.join(", "));
});

async function open(query: Record<string, string>, view = ""): Promise<Page> {
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page: ${error.message}`));
  const search = new URLSearchParams({ ...query, ...(view ? { view } : {}) });
  await page.goto(`${origin}?${search}`);
  return page;
}

/** Waits for the job to end; returns "done" or "error" and how long it took. */
async function settle(page: Page, what: string): Promise<string> {
  const started = performance.now();
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state ?? ""), undefined, {
    timeout: 60_000,
  });
  timings.push(`${what} ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const state = await page.evaluate(() => document.body.dataset.state as string);
  if (state === "error") problems.push(`${what}: ${await page.textContent("#status-text")}`);
  return state;
}

/** Starts a job with a click and waits for it. */
async function job(page: Page, selector: string, what: string): Promise<string> {
  await page.evaluate(() => {
    document.body.dataset.state = "idle";
  });
  await page.click(selector);
  return settle(page, what);
}

const downloaded = (page: Page, name: string) =>
  page.evaluate(async (file) => {
    const link = document.querySelector<HTMLAnchorElement>(`a[download="${file}"]`);
    return link ? (await fetch(link.href)).text() : undefined;
  }, name);

const shot = (page: Page, name: string) =>
  page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

describe("the playground", () => {
  it("run=1: a Zipf workload under EPT leaves in #report exactly what memvirt run --json prints for the same config, workload and seed; the JSON, CSV and HTML downloads are the CLI's", async () => {
    const page = await open({ config: JSON.stringify({ mode: "ept" }), ...ZIPF, run: "1" }, "see");
    expect(await settle(page, "zipf run")).toBe("done");
    const text = (await page.textContent("#report")) ?? "";
    expect(JSON.parse(text)).toEqual(cli.report);
    expect(`${text}\n`).toBe(cli.stdout);
    expect(await downloaded(page, "report.json")).toBe(cli.stdout);
    // The CLI's --csv, run in this process: the same command, printed instead of spawned again.
    let csv = "";
    const argv = ["node", "memvirt", "run", "--config", join(work, "ept.json"), ...zipfFlags, "--csv"];
    expect(await main(argv, (text) => (csv += `${text}\n`))).toBe(0);
    expect(await downloaded(page, "report.csv")).toBe(csv);
    expect(await downloaded(page, "report.html")).toBe(cli.html);
    // The See view draws the three charts, each with its values.
    expect(await page.locator("#see figure.chart").count()).toBe(3);
    expect(await page.locator("#see figure.chart canvas").count()).toBeGreaterThanOrEqual(3);
    await shot(page, "see");
    await page.close();
  });

  it("run=1: pt-churn under shadow paging on 2 vCPUs, picked from the CLI's workload list, reports what memvirt run --json does, system calls and shootdowns included", async () => {
    const config = { mode: "shadow", cpus: 2 };
    const flags = { workload: "pt-churn", records: "3000", seed: "5" };
    const page = await open({ config: JSON.stringify(config), ...flags, run: "1" }, "see");
    // The list is the CLI's own, group by group.
    const groups = await page.$$eval("#workload optgroup", (list) =>
      list.map((group) => ({
        label: group.getAttribute("label") ?? "",
        names: [...group.querySelectorAll("option")].map((option) => option.textContent ?? ""),
      })),
    );
    expect(groups).toEqual(WORKLOAD_GROUPS.map((group) => ({ label: group.label, names: [...group.names] })));
    expect(await settle(page, "pt-churn run")).toBe("done");
    const report = JSON.parse((await page.textContent("#report")) ?? "") as RunReport;
    writeFileSync(join(work, "churn.json"), JSON.stringify(config));
    let json = "";
    const argv = ["node", "memvirt", "run", "--config", join(work, "churn.json"), "--json"];
    for (const [key, value] of Object.entries(flags)) argv.push(`--${key}`, value);
    expect(await main(argv, (text) => (json += text))).toBe(0);
    expect(report).toEqual(JSON.parse(json));
    expect(report.syscalls?.calls.fork).toBeGreaterThan(0);
    await page.close();
  });

  it("replays a shipped trace given to the file input (examples/ls.lk.xz, decoded in chunks in the worker) to the statistics Node's replay gives", async () => {
    const page = await open({ config: JSON.stringify({ mode: "ept" }) });
    await page.check("input[name=source][value=trace]");
    await page.setInputFiles("#trace-file", join(ROOT, "examples", "ls.lk.xz"));
    await shot(page, "run");
    expect(await job(page, "#run", "ls.lk.xz replay")).toBe("done");
    const report = JSON.parse((await page.textContent("#report")) ?? "{}");

    const simulation = new Simulation(resolveConfig({ mode: "ept" }));
    simulation.start();
    const result = await replayTrace(simulation, join(ROOT, "examples", "ls.lk.xz"), "auto");
    const node = buildReport(simulation, {
      kind: "trace",
      file: "ls.lk.xz",
      format: result.format,
      lines: result.lines,
      records: result.records,
    });
    expect(report.source).toMatchObject({ kind: "trace", file: "ls.lk.xz", format: "lackey" });
    expect(report.accesses).toBeGreaterThan(199_000);
    // As memvirt run --json prints it: with the effective config.
    expect(report).toEqual(JSON.parse(JSON.stringify({ ...node, config: configToJson(simulation.config) })));
    await page.close();
  });

  it("the Walk view of a cold 4+4-level EPT walk counts 24 references, steps through them one by one, and decodes a #PF's error code", async () => {
    const page = await open(
      {
        config: JSON.stringify({ mode: "ept", nestedPsc: false }),
        workload: "zipf",
        records: "20000",
        footprint: "4M",
        run: "1",
      },
      "walk",
    );
    expect(await settle(page, "run and walk")).toBe("done");
    expect(await page.getAttribute("#walk", "data-references")).toBe("24");
    expect(await page.locator("#walk table.references tbody tr").count()).toBe(24);
    expect(await page.locator("#walk table.walk-grid .cell").count()).toBe(24);
    const orders = await page.locator("#walk .cell .order").allTextContents();
    expect(orders.filter(Boolean)).toHaveLength(24);
    await shot(page, "walk");

    await page.click("text=« First");
    expect(await page.textContent(".step-text")).toBe("Step through 24 references.");
    await page.getByRole("button", { name: "Next reference" }).focus();
    await page.keyboard.press("Enter");
    expect(await page.textContent(".step-text")).toMatch(
      /^Reference 1 of 24: EPT PML4E for the guest PML4E table/,
    );
    expect(await page.locator("#walk .cell.current").count()).toBe(1);
    await page.getByRole("button", { name: "Next reference" }).click();
    await page.getByRole("button", { name: "Next reference" }).click();
    expect(await page.textContent(".step-text")).toMatch(/^Reference 3 of 24: EPT PDE/);
    await shot(page, "walk-step");

    await page.fill("#gva", "0x7f0000000000");
    expect(await job(page, "#walk-run", "fault walk")).toBe("done");
    expect(await page.textContent("#walk .fault h3")).toMatch(/^#PF \(page fault\), error code 0x4$/);
    const bits = await page.locator("#walk .fault tbody tr").allTextContents();
    expect(bits[0]).toMatch(/^0P0/);
    expect(bits[2]).toMatch(/^2U\/S1/);
    await page.close();
  });

  it("Compare: the 14 mode and page-size pairings as a grouped chart and a table; the seed table, measured here, is the CLI's (test/golden)", async () => {
    const page = await open({ workload: "zipf", records: "30000", footprint: "16M" }, "compare");
    expect(await job(page, "#compare-run", "compare")).toBe("done");
    expect(await page.locator("#compare table.compare-table tbody tr").count()).toBe(14);
    expect(await page.locator("#compare figure.chart").count()).toBe(2);
    expect(await page.locator("#compare .u-legend .u-series").count()).toBeGreaterThanOrEqual(6);
    expect(await job(page, "#seed-run", "seed table")).toBe("done");
    expect(await page.locator("#seed-table tbody tr").count()).toBe(12);
    expect(await downloaded(page, "seed-table.json")).toBe(
      readFileSync(join(ROOT, "test", "golden", "seed-table.json"), "utf8"),
    );
    await shot(page, "compare");
    await page.close();
  });

  it("Overcommit: memory-hog on an overcommitted host (the README's example) draws host memory and each VM's pages over simulated time with the controller's states behind", async () => {
    const page = await open({}, "overcommit");
    expect(await job(page, "#overcommit-example", "memory-hog")).toBe("done");
    const report = JSON.parse((await page.textContent("#report")) ?? "{}");
    expect(report.source).toMatchObject({ name: "memory-hog", vms: 3, pagesPerVm: 2048, seconds: 3 });
    expect(report.memory.saved.balloon + report.memory.saved.zswap).toBeGreaterThan(0);
    expect(await page.locator("#overcommit figure.chart").count()).toBe(2);
    const states = await page.locator("#overcommit .legend .swatch").allTextContents();
    expect(states).toEqual(expect.arrayContaining(["high", "low"]));
    const timeline = (await downloaded(page, "timeline.csv")) ?? "";
    expect(timeline.split("\n")[0]).toMatch(/^seconds,host_free_pages,host_used_pages,vm1_pages/);
    expect(timeline.trim().split("\n").length).toBeGreaterThan(20);
    await shot(page, "overcommit");
    await page.close();
  });

  it("is keyboard operable with labelled controls, and fits a phone: the tabs follow the arrow keys, and at 390x844 only the tab strip and tables scroll sideways", async () => {
    const page = await open({});
    await page.focus("#tab-run");
    await page.keyboard.press("ArrowRight");
    expect(await page.getAttribute("#tab-see", "aria-selected")).toBe("true");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("tab-see");
    expect(await page.isHidden("#view-run")).toBe(true);
    await page.keyboard.press("End");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("tab-overcommit");
    await page.keyboard.press("Home");
    expect(await page.isVisible("#view-run")).toBe(true);
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll("input, select, textarea, button")]
        .filter((control) => {
          const labelled =
            (control.id && document.querySelector(`label[for="${control.id}"]`)) ||
            control.closest("label") ||
            control.getAttribute("aria-label") ||
            (control.tagName === "BUTTON" && control.textContent?.trim());
          return !labelled;
        })
        .map((control) => control.outerHTML),
    );
    expect(unlabelled).toEqual([]);
    await page.setViewportSize({ width: 390, height: 844 });
    for (const view of ["run", "see", "compare", "walk", "overcommit"]) {
      await page.click(`#tab-${view}`);
      const wide = await page.evaluate(() =>
        [...document.querySelectorAll("body *")]
          .filter((e) => e.getBoundingClientRect().right > innerWidth + 1)
          .filter((e) => !e.closest(".tabs, .table-scroll, .grid-scroll, pre"))
          .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`),
      );
      expect(wide, view).toEqual([]);
    }
    await page.click("#tab-run");
    await shot(page, "run-phone");
    await page.close();
  });

  it("made no console error and no request outside the page's own origin", () => {
    expect(problems).toEqual([]);
    expect(outside).toEqual([]);
  });
});
