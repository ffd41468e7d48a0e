#!/usr/bin/env node
// The memvirt command. `npm run build` compiles the TypeScript sources to dist/ and bundles the command
// line into one CommonJS file, dist/cli/memvirt.cjs (scripts/bundle-cli.mjs); this file, CommonJS too
// (bin/package.json), runs it. Start-up is most of a small run's CPU time, so the bundle is compiled
// with the V8 code cache the build saved beside it (dist/cli/memvirt.cjs.cache). V8 takes a cache only
// from its own version, under the same flags and for a source of the same length (the build writes the
// two together; after editing the bundle by hand, delete the cache), and compiles afresh otherwise.
"use strict";
const { existsSync, readFileSync } = require("node:fs");
const { createRequire, wrap } = require("node:module");
const { dirname, join } = require("node:path");
const { setFlagsFromString } = require("node:v8");
const { Script } = require("node:vm");

// V8 compiles each Wasm function with its baseline compiler (Liftoff) when first called and again with
// TurboFan once it has run for V8's tiering budget. A small run is over before TurboFan's code would
// serve it, and TurboFan is dear: the text parser alone takes about 25 ms of a background thread's CPU.
// The command line gives Wasm functions 100 times the default budget (1.8 M), which a 50 k-record
// trace never spends while a run of millions still tiers its hot functions up in its first per cent.
// Only when functions are compiled changes, never what they compute. Set before the bundle is
// compiled, so that its code cache is made and used under the same flags.
setFlagsFromString("--wasm-tiering-budget=180000000");

const BUNDLE = join(__dirname, "..", "dist", "cli", "memvirt.cjs");
const CODE_CACHE = `${BUNDLE}.cache`;

/**
 * Compiles and evaluates the bundle as Node would require it, with the code cache when there is one.
 * Returns its exports and the compiled script (whose createCachedData() the build saves).
 */
function loadBundle() {
  let cachedData;
  try {
    cachedData = readFileSync(CODE_CACHE);
  } catch {
    // No cache (a build that did not make one): compile from source.
  }
  // No importModuleDynamically: Node 20 loses it when the script comes from a code cache, so the
  // bundle has no import() of anything outside it (scripts/bundle-cli.mjs checks).
  const script = new Script(wrap(readFileSync(BUNDLE, "utf8")), { filename: BUNDLE, cachedData });
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(BUNDLE), module, BUNDLE, dirname(BUNDLE));
  return { exports: module.exports, script };
}

if (require.main === module) {
  if (!existsSync(BUNDLE)) {
    process.stderr.write("memvirt: not built yet; run `npm run build` (or `npm start`) first\n");
    process.exit(1);
  }
  const cli = loadBundle().exports;
  cli.main(process.argv).then((code) => {
    process.exitCode = code;
    // A run stopped while waiting for input (a trace on a pipe) leaves that read pending: end once
    // the output is out rather than wait for a writer that may never come.
    cli.afterOutput(() => process.exit(code));
  });
} else {
  module.exports = { BUNDLE, CODE_CACHE, loadBundle };
}
