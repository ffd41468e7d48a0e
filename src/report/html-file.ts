// Writing the HTML report to a file (Node); rendering it (report/html.ts) works on every host.
import { writeFileSync } from "node:fs";
import type { CompareResult } from "../cli/compare.js";
import { MemvirtError } from "../core/errors.js";
import { renderHtmlReport } from "./html.js";
import type { RunReport } from "./report.js";

export function writeHtmlReport(path: string, reports: RunReport[], compare?: CompareResult): void {
  try {
    writeFileSync(path, renderHtmlReport(reports, compare));
  } catch (error) {
    throw new MemvirtError(`${path}: cannot write the report: ${(error as Error).message}`);
  }
}
