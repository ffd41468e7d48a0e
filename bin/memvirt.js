#!/usr/bin/env node
// The memvirt command. `npm run build` compiles the TypeScript sources to dist/ and bundles the command
// line into one CommonJS file, dist/cli/memvirt.cjs (scripts/bundle-cli.mjs); this file, CommonJS too
// (bin/package.json), runs it. Start-up is most of a small run's CPU time, so the bundle is compiled
// with the V8 code cache the build saved beside it (dist/cli/memvirt.cjs.cache): V8 checks that the
// cache was made by its own version and flags for this very source, and compiles afresh otherwise.
"use strict";
const { existsSync, readFileSync } = require("node:fs");
const { createRequire, wrap } = require("node:module");
const { dirname, join } = require("node:path");
const { Script } = require("node:vm");

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
  loadBundle()
    .exports.main(process.argv)
    .then((code) => {
      process.exitCode = code;
      // A run stopped while waiting for input (a trace on a pipe) leaves that read pending: end once
      // the output is out rather than wait for a writer that may never come.
      process.stdout.write("", () => process.exit(code));
    });
} else {
  module.exports = { BUNDLE, CODE_CACHE, loadBundle };
}
