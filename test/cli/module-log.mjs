// Module hooks for test/cli/loading.test.ts: appends the URL of every file module loaded to the file
// MEMVIRT_MODULE_LOG names.
import { appendFileSync } from "node:fs";

export async function load(url, context, next) {
  if (url.startsWith("file:")) appendFileSync(process.env.MEMVIRT_MODULE_LOG, `${url}\n`);
  return next(url, context);
}
