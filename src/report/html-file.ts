// Writing the HTML reports to files (Node); rendering them (report/html.ts) works on every host.
import { writeFileSync } from "node:fs";
import type { CompareResult } from "../cli/compare.js";
import type { ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/errors.js";
import type { IommuCompareResult } from "../iommu/compare.js";
import type { OvercommitReport } from "../overcommit/report.js";
import {
  renderHtmlReport,
  renderIommuCompareReport,
  renderOvercommitReport,
  renderSweepReport,
  type SweepPageCell,
  type SweepPageConfig,
} from "./html.js";
import { attachConfig, type RunReport } from "./report.js";

function writePage(path: string, html: string): void {
  try {
    writeFileSync(path, html);
  } catch (error) {
    throw new MemvirtError(`--report ${path}: cannot write: ${(error as Error).message}`);
  }
}

export function writeHtmlReport(path: string, reports: RunReport[], compare?: CompareResult): void {
  writePage(path, renderHtmlReport(reports, compare));
}

export function writeSweepReport(path: string, cells: SweepPageCell[], configs: SweepPageConfig[]): void {
  writePage(path, renderSweepReport(cells, configs));
}

/** The page of a run of several VMs, with the config it ran with. */
export function writeOvercommitReport(path: string, report: OvercommitReport, config: ResolvedConfig): void {
  writePage(path, renderOvercommitReport(attachConfig({ ...report }, config)));
}

/** The page of an IOMMU-mode comparison, with its base config. */
export function writeIommuCompareReport(
  path: string,
  result: IommuCompareResult,
  config: ResolvedConfig,
): void {
  writePage(path, renderIommuCompareReport(attachConfig({ ...result }, config)));
}
