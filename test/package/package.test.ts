// memvirt as a user installs it: `npm pack`, the tarball installed into an empty project with
// --omit=dev, then used from there: the public entry in Node, the `memvirt` bin, the examples, an
// esbuild bundle for the browser, and that bundle in real headless Chromium (Debian's, through
// playwright-core), whose statistics must equal Node's for the same config and trace. One pack and
// one install serve every test (they run in the "package" vitest project only, against the release
// build `npm test` has just made).

import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { build as buildSite } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium } from "../chromium.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const NODE_MODULES_LIMIT = 15 * 1024 * 1024;

let work: string;
let project: string;
let installed: string;
let tarball: { file: string; size: number; files: string[] };

function run(command: string, args: string[], cwd: string): string {
  return execFileSync(command, args, {
    cwd,
    encoding: "utf8",
    maxBuffer: 1 << 26,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Runs a module in the consumer project (so "memvirt" resolves to the installed tarball). */
function runInProject(name: string, source: string): string {
  writeFileSync(join(project, name), source);
  return run(process.execPath, [name], project);
}

function treeBytes(path: string): number {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) return 0;
  if (!stat.isDirectory()) return stat.size;
  return readdirSync(path).reduce((sum, entry) => sum + treeBytes(join(path, entry)), 0);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "memvirt-package-"));
  // The playground's site goes into the tarball as prepack (npm run web:build) would put it there.
  await buildSite({ configFile: join(ROOT, "web", "vite.config.ts"), logLevel: "error" });
  // `npm test` has built dist/ and the Wasm; prepack would build them again.
  const [packed] = JSON.parse(
    run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], ROOT),
  );
  tarball = {
    file: join(work, packed.filename),
    size: packed.size,
    files: packed.files.map((f: { path: string }) => f.path),
  };
  project = join(work, "consumer");
  mkdirSync(project);
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify({ name: "consumer", private: true, type: "module" }),
  );
  run("npm", ["install", "--omit=dev", "--no-audit", "--no-fund", "--prefer-offline", tarball.file], project);
  installed = join(project, "node_modules", "memvirt");
}, 300_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the tarball", () => {
  it("holds the built JavaScript and types, both Wasm builds, README, LICENSE and the examples, and no tests, fixtures or benchmarks", () => {
    for (const file of [
      "dist/src/index.js",
      "dist/src/index.d.ts",
      "dist/src/node.js",
      "dist/reference/index.js",
      "dist/build/release.wasm",
      "dist/build/debug.wasm",
      "bin/memvirt.js",
      "bin/package.json",
      "dist/cli/memvirt.cjs",
      "dist/cli/memvirt.cjs.cache",
      "README.md",
      "LICENSE",
      "examples/ls-head.lk",
      "web/dist/index.html",
    ]) {
      expect(tarball.files).toContain(file);
    }
    expect(tarball.files.filter((f) => /^(test|bench|assembly|src|reference|dist\/bench)\//.test(f))).toEqual(
      [],
    );
    expect(readFileSync(join(installed, "LICENSE"), "utf8")).toMatch(/^MIT License/);
    // The site carries the release core only, and one trace.
    const site = tarball.files.filter((f) => f.startsWith("web/"));
    expect(site.filter((f) => f.endsWith(".wasm"))).toEqual([
      expect.stringMatching(/^web\/dist\/assets\/release-/),
    ]);
    expect(site.some((f) => f.startsWith("web/src/") || f.endsWith(".lk"))).toBe(false);
    console.log(`tarball ${(tarball.size / 1024).toFixed(0)} KiB, ${tarball.files.length} files`);
  });

  it("installs with --omit=dev into 15 MB of node_modules or less, without the AssemblyScript compiler", () => {
    const bytes = treeBytes(join(project, "node_modules"));
    console.log(`node_modules after npm install --omit=dev: ${(bytes / 1024 / 1024).toFixed(2)} MB`);
    expect(bytes).toBeLessThanOrEqual(NODE_MODULES_LIMIT);
    expect(existsSync(join(project, "node_modules", "assemblyscript"))).toBe(false);
    expect(existsSync(join(project, "node_modules", "binaryen"))).toBe(false);
  });
});

describe("the installed package in Node", () => {
  it('import { Machine, defaultConfig } from "memvirt" translates through a 4-level walk, and memvirt/reference agrees', () => {
    const output = runInProject(
      "walk.mjs",
      `import { AccessKind, Machine, defaultConfig } from "memvirt";
import { RefMachine } from "memvirt/reference";
const results = [new Machine(defaultConfig().machine), new RefMachine(defaultConfig().machine)].map((m) => {
  m.writePhys64(0x1000n, 0x2000n | 7n);
  m.writePhys64(0x2000n, 0x3000n | 7n);
  m.writePhys64(0x3000n, 0x4000n | 7n);
  m.writePhys64(0x4000n + 8n, 0x9000n | 7n);
  m.setRegs(0, { cr0: 0x80010001n, cr3: 0x1000n, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
  const r = "translate" in m ? m.translate(0, 0x1234n, AccessKind.Read) : m.access(0, 0x1234n, AccessKind.Read);
  return { fault: r.fault, pa: r.pa.toString(16), refs: r.refs, pte: m.readPhys64(0x4008n).toString(16) };
});
console.log(JSON.stringify(results));`,
    );
    const [core, reference] = JSON.parse(output);
    expect(core).toEqual({ fault: 0, pa: "9234", refs: 4, pte: "9027" });
    expect(reference).toEqual(core);
  });

  it("await Machine.create loads the packaged core through new URL(..., import.meta.url), as a bundler-free browser would", () => {
    const output = runInProject(
      "create.mjs",
      `import { Machine, defaultConfig, packagedWasmUrl } from "memvirt";
const machine = await Machine.create(defaultConfig().machine, { build: "debug" });
console.log(JSON.stringify({ build: machine.build, url: packagedWasmUrl("release").href }));`,
    );
    const { build, url } = JSON.parse(output);
    expect(build).toBe("debug");
    expect(fileURLToPath(url)).toBe(join(installed, "dist", "build", "release.wasm"));
  });

  it("npx memvirt run --trace on the shipped lackey trace replays it", () => {
    const output = run(
      "npx",
      ["--no-install", "memvirt", "run", "--trace", "node_modules/memvirt/examples/ls-head.lk", "--json"],
      project,
    );
    const report = JSON.parse(output);
    expect(report.source).toMatchObject({ kind: "trace", format: "lackey" });
    expect(report.accesses).toBeGreaterThan(19_000);
    expect(report.walks).toBeGreaterThan(0);
  });

  it("the installed bin compiles its command-line bundle from the shipped code cache (the same Node built it)", () => {
    const bin = join(installed, "bin", "memvirt.js");
    const output = runInProject(
      "code-cache.cjs",
      `const { loadBundle } = require(${JSON.stringify(bin)});
const loaded = loadBundle();
console.log(JSON.stringify({ rejected: loaded.script.cachedDataRejected, main: typeof loaded.exports.main }));`,
    );
    expect(JSON.parse(output)).toEqual({ rejected: false, main: "function" });
  });

  it("the package ships its CPU presets: npx memvirt run --preset zen4 runs on Zen 4's 72-entry L1 DTLB", () => {
    const args = [
      "--no-install",
      "memvirt",
      "run",
      "--preset",
      "zen4",
      "--trace",
      "node_modules/memvirt/examples/ls-head.lk",
    ];
    const report = JSON.parse(run("npx", [...args, "--json"], project));
    expect(report.config.tlb.l1d.arrays[0].entries).toBe(72);
  });

  it("memvirt web serves the playground the package ships on 127.0.0.1 and prints its URL", async () => {
    // The installed bin itself (npx would leave it running when killed).
    const server = spawn(process.execPath, [join(installed, "bin", "memvirt.js"), "web", "--port", "0"], {
      cwd: project,
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const url = await new Promise<string>((done, fail) => {
        let text = "";
        server.stdout.on("data", (chunk) => {
          text += String(chunk);
          const match = /http:\/\/127\.0\.0\.1:\d+\//.exec(text);
          if (match) done(match[0]);
        });
        server.once("exit", (code) => fail(new Error(`memvirt web exited with ${code}: ${text}`)));
      });
      const page = await fetch(url);
      expect(page.status).toBe(200);
      expect(page.headers.get("content-type")).toMatch(/^text\/html/);
      const html = await page.text();
      expect(html).toContain("<title>memvirt playground</title>");
      const script = /src="\.\/(assets\/index-[\w-]+\.js)"/.exec(html)?.[1];
      expect((await fetch(new URL(script ?? "missing", url))).status).toBe(200);
      expect((await fetch(new URL("../../etc/passwd", url))).status).toBe(404);
    } finally {
      server.kill();
      await new Promise((done) => server.once("exit", done));
    }
  });

  it("the Redis queue's client libraries are optional peers: without them --queue says what to install, exit 2", () => {
    expect(existsSync(join(project, "node_modules", "bullmq"))).toBe(false);
    const result = spawnSync("npx", ["--no-install", "memvirt", "worker", "--queue", "redis://127.0.0.1:1"], {
      cwd: project,
      encoding: "utf8",
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(
      /needs the (bullmq|ioredis) package.*npm install bullmq@[\d.]+ ioredis@[\d.]+/,
    );
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it("examples/embed-cache.mjs runs as shipped: per-call and batched translation give the same statistics", () => {
    const output = run(process.execPath, [join(installed, "examples", "embed-cache.mjs")], project);
    expect(output).toMatch(/^per call: 1216 accesses/m);
    expect(output).toMatch(/same statistics both ways: true/);
  });
});

describe("the installed package in a browser", () => {
  it("an esbuild browser bundle of the public entry contains no node: import", async () => {
    writeFileSync(join(project, "entry.mjs"), `export * from "memvirt";\n`);
    const result = await build({
      entryPoints: [join(project, "entry.mjs")],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      metafile: true,
      logLevel: "silent",
      absWorkingDir: project,
    });
    const text = result.outputFiles[0].text;
    const imports = Object.values(result.metafile.inputs).flatMap((input) =>
      input.imports.map((i) => i.path),
    );
    console.log(
      `browser bundle of "memvirt": ${(text.length / 1024).toFixed(0)} KiB, ${Object.keys(result.metafile.inputs).length} modules`,
    );
    expect(imports.filter((path) => path.startsWith("node:"))).toEqual([]);
    expect(text).not.toMatch(/["'`]node:/);
  });

  it("examples/browser in headless Chromium: a 4-level walk on the main thread, an in-memory lackey trace and an xz download stream in a Worker, statistics equal Node's", async () => {
    const examples = join(installed, "examples");
    await build({
      entryPoints: [join(examples, "browser", "main.js"), join(examples, "browser", "worker.js")],
      bundle: true,
      format: "esm",
      platform: "browser",
      loader: { ".wasm": "file" },
      outdir: join(examples, "browser", "dist"),
      logLevel: "silent",
      absWorkingDir: project,
    });
    // Node: the same config and trace through the installed package's file API.
    const node = JSON.parse(
      runInProject(
        "replay.mjs",
        `import { buildReport, parseConfigText, replayTrace, Simulation } from "memvirt";
import { readFileSync } from "node:fs";
const dir = "node_modules/memvirt/examples/";
const reports = {};
for (const name of ["ls-head.lk", "ls.lk.xz"]) {
  const simulation = new Simulation(parseConfigText(readFileSync(dir + "ept.json", "utf8"), "ept.json"));
  simulation.start();
  const replay = await replayTrace(simulation, dir + name, "auto");
  reports[name] = buildReport(simulation, { kind: "trace", file: name, format: replay.format });
}
console.log(JSON.stringify(reports));`,
      ),
    );
    const server = await serve(examples);
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      const { port } = server.address() as { port: number };
      await page.goto(`http://127.0.0.1:${port}/browser/index.html`);
      await page.waitForFunction(() => "memvirtResult" in globalThis, undefined, { timeout: 60_000 });
      const result = await page.evaluate(() =>
        JSON.stringify((globalThis as { memvirtResult?: unknown }).memvirtResult),
      );
      const answer = JSON.parse(result);
      expect(errors).toEqual([]);
      expect(answer.error).toBeUndefined();
      const walk = { fault: 0, pa: "0x9234", refs: 4 };
      expect(answer.mainThreadWalk).toMatchObject(walk);
      expect(answer.walk).toEqual(answer.mainThreadWalk);
      const reports = answer.reports;
      expect(Object.keys(reports)).toEqual(["ls-head.lk", "ls.lk.xz"]);
      expect(reports["ls-head.lk"].accesses).toBeGreaterThan(19_000);
      expect(reports["ls.lk.xz"].accesses).toBeGreaterThan(199_000);
      for (const report of Object.values(reports))
        expect(report).toMatchObject({ mode: "ept", source: { format: "lackey" } });
      expect(reports).toEqual(node);
    } finally {
      await browser.close();
      server.close();
    }
  });
});

const TYPES: Record<string, string> = {
  ".html": "text/html",
  ".js": "text/javascript",
  ".wasm": "application/wasm",
  ".json": "application/json",
};

/** A static file server for `root` on a free port of 127.0.0.1. */
function serve(root: string): Promise<Server> {
  const server = createServer((request, response) => {
    const path = resolve(join(root, decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname)));
    if (!path.startsWith(root) || !existsSync(path) || statSync(path).isDirectory()) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" });
    response.end(readFileSync(path));
  });
  return new Promise((done) => server.listen(0, "127.0.0.1", () => done(server)));
}
