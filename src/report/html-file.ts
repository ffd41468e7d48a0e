// Writing the HTML reports to files (Node); rendering them (report/html.ts) works on every host.
import { writeFileSync } from "node:fs";
import type { CompareResult } from "../cli/compare.js";
import { MemvirtError } from "../core/errors.js";
import { renderHtmlReport, renderSweepReport, type SweepPageCell, type SweepPageConfig } from "./html.js";
import type { RunReport } from "./report.js";

function writePage(path: string, html: string): void {
  try {
    writeFileSync(path, html);
  } catch (error) {
    throw new MemvirtError(`${path}: cannot write the report: ${(error as Error).message}`);
  }
}

export function writeHtmlReport(path: string, reports: RunReport[], compare?: CompareResult): void {
  writePage(path, renderHtmlReport(reports, compare));
}

export function writeSweepReport(path: string, cells: SweepPageCell[], configs: SweepPageConfig[]): void {
  writePage(path, renderSweepReport(cells, configs));
}
