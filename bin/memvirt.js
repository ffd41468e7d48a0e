#!/usr/bin/env node
// The memvirt command. The TypeScript sources are compiled to dist/ by `npm run build`.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/src/cli/main.js", import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write("memvirt: not built yet; run `npm run build` (or `npm start`) first\n");
  process.exit(1);
}
const { main } = await import(entry.href);
const code = await main(process.argv);
process.exitCode = code;
// A run stopped while waiting for input (a trace on a pipe) leaves that read pending: end once the
// output is out rather than wait for a writer that may never come.
process.stdout.write("", () => process.exit(code));
