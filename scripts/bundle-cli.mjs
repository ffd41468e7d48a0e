// Bundles the command line (dist/src/cli/main.js, as tsc compiled it, and what it imports) into one
// CommonJS file, dist/cli/memvirt.cjs, which bin/memvirt.js runs, and saves V8's code cache for it
// beside it. Start-up is most of a small run's CPU time, and Node spends much of it per ES module
// (resolving, reading, linking, compiling) and per built-in it makes an ES module facade for; one
// CommonJS file compiled from a code cache pays none of that. The lazy imports stay lazy: a module
// that main.ts imports only when a command runs is evaluated only then.
//
// The modules find their files relative to themselves (`new URL("../../build/release.wasm",
// import.meta.url)`). Those literals are rewritten for the bundle's place, so each still names the
// same file: dist/build/ for the core, web/dist/ for the playground, presets/, the compiled workers in
// dist/src/. The optional peers, the worker pool and progress bars stay outside and are required from
// node_modules as before.
import { rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("../", import.meta.url));
const compiled = resolve(root, "dist/src");
// bin/memvirt.js loads the bundle; it names the files.
const { BUNDLE: outfile, CODE_CACHE, loadBundle } = createRequire(import.meta.url)("../bin/memvirt.js");

const EXTERNAL = ["bullmq", "ioredis", "piscina", "cli-progress", "playwright-core"];

/** `new URL("./x", import.meta.url)` with a literal path: the form bundlers recognise. */
const RELATIVE_URL = /new URL\("(\.{1,2}\/[^"]*)", import\.meta\.url\)/g;

/** Rewrites each module's relative URLs so that, from the bundle, they name the same files. */
const relocateUrls = {
  name: "relocate-urls",
  setup(pluginBuild) {
    pluginBuild.onLoad({ filter: /\.js$/ }, async ({ path }) => {
      if (!path.startsWith(`${compiled}/`)) return undefined;
      const source = await readFile(path, "utf8");
      const contents = source.replace(RELATIVE_URL, (_, target) => {
        let moved = relative(dirname(outfile), resolve(dirname(path), target));
        if (target.endsWith("/")) moved += "/";
        if (!moved.startsWith(".")) moved = `./${moved}`;
        return `new URL(${JSON.stringify(moved)}, import.meta.url)`;
      });
      return { contents, loader: "js" };
    });
  },
};

/**
 * commander requires node:child_process when it loads, for subcommands that are executables of their
 * own, which memvirt has none of: it gets the module when it first uses it, so that no run pays for
 * loading child_process (and dgram and the socket list it pulls in).
 */
const lazyChildProcess = {
  name: "lazy-child-process",
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /^node:child_process$/ }, ({ importer }) =>
      importer.includes("/node_modules/commander/")
        ? { path: "child_process", namespace: "lazy" }
        : undefined,
    );
    pluginBuild.onLoad({ filter: /.*/, namespace: "lazy" }, () => ({
      contents: 'module.exports = new Proxy({}, { get: (_, name) => require("node:child_process")[name] });',
      loader: "js",
    }));
  },
};

// dist/cli/ holds what this writes and nothing else (the package ships the folder). The old code cache
// goes first in any case: V8 accepts a code cache for any source of the same length.
rmSync(dirname(outfile), { recursive: true, force: true });
const { metafile } = await build({
  entryPoints: [resolve(compiled, "cli/main.js")],
  outfile,
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20",
  external: EXTERNAL,
  // CommonJS has no import.meta: the bundle's own URL stands for it, after relocateUrls.
  define: { "import.meta.url": "__memvirtBundleUrl" },
  // Without comments and white space the bundle is 40% smaller, and every run reads all of it (the
  // code cache holds bytecode, not the source V8 still needs). Names stay, for stack traces.
  minifyWhitespace: true,
  minifySyntax: true,
  banner: { js: 'const __memvirtBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  plugins: [relocateUrls, lazyChildProcess],
  metafile: true,
  logLevel: "warning",
});

// A script compiled from a code cache has no dynamic-import callback: everything outside the bundle
// must be required.
const imported = Object.values(metafile.outputs).flatMap((output) =>
  output.imports.filter((i) => i.kind === "dynamic-import" && i.external).map((i) => i.path),
);
if (imported.length > 0) throw new Error(`the CLI bundle would import() ${imported.join(", ")}: require it`);

// The code cache: V8's bytecode for the bundle as it stands after a small trace run, so that a run
// compiles next to none of the command line again (a cache made after execution keeps the functions
// compiled lazily during the run, not only the top level).
const { exports, script } = loadBundle();
const trace = resolve(root, "examples/ls-head.lk");
const code = await exports.main(["node", "memvirt", "run", "--trace", trace, "--quiet"], () => {});
if (code !== 0) throw new Error(`memvirt run --trace ${trace} exited with ${code}`);
writeFileSync(CODE_CACHE, script.createCachedData());
