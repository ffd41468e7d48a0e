// `--report out.html`: one self-contained page (inline CSS and SVG drawn here, no scripts, no
// network) with, for each run, TLB hit rates by level, the walk-cost histogram and the cycle
// breakdown, then tables comparing the runs (and `memvirt compare`'s rows when given).

import type { CompareResult } from "../cli/compare.js";
import type { RunReport } from "./report.js";

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"];

function escapeHtml(text: unknown): string {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const count = (n: number) => n.toLocaleString("en-US");

interface Bar {
  label: string;
  value: number;
  text: string;
}

/** A horizontal bar chart; values are drawn against `max` (the largest value when omitted). */
function barChart(title: string, bars: Bar[], max?: number): string {
  const rowHeight = 22;
  const labelWidth = 150;
  const barWidth = 360;
  const height = bars.length * rowHeight + 30;
  const top = max ?? Math.max(1e-12, ...bars.map((bar) => bar.value));
  const rows = bars
    .map((bar, i) => {
      const y = 24 + i * rowHeight;
      const width = Math.max(0, Math.min(1, bar.value / top)) * barWidth;
      return `<text x="${labelWidth - 6}" y="${y + 14}" text-anchor="end">${escapeHtml(bar.label)}</text><rect x="${labelWidth}" y="${y + 2}" width="${width.toFixed(1)}" height="${rowHeight - 6}" fill="${PALETTE[i % PALETTE.length]}"/><text x="${labelWidth + width + 6}" y="${y + 14}">${escapeHtml(bar.text)}</text>`;
    })
    .join("");
  return `<svg class="chart" width="${labelWidth + barWidth + 170}" height="${height}" role="img" aria-label="${escapeHtml(title)}"><text x="0" y="14" class="title">${escapeHtml(title)}</text>${rows}</svg>`;
}

/** The access-cost histogram: bucket 0 is 0 cycles, bucket b is [2^(b-1), 2^b). */
function histogramChart(report: RunReport): string {
  const histogram = report.histogram as number[];
  let last = histogram.length - 1;
  while (last > 0 && histogram[last] === 0) last--;
  const buckets = histogram.slice(0, last + 1);
  const total = buckets.reduce((sum, n) => sum + n, 0);
  const width = 720;
  const height = 200;
  const columnWidth = width / Math.max(1, buckets.length);
  const top = Math.max(1, ...buckets);
  const bars = buckets
    .map((n, b) => {
      // Log scale: the hit bucket holds almost everything, and the walk buckets would not show.
      const h = n === 0 ? 0 : (Math.log10(n + 1) / Math.log10(top + 1)) * (height - 40);
      const x = b * columnWidth;
      const range = b === 0 ? "0" : `${2 ** (b - 1)}-${2 ** b - 1}`;
      return `<rect x="${(x + 1).toFixed(1)}" y="${(height - 20 - h).toFixed(1)}" width="${(columnWidth - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${PALETTE[0]}"><title>${range} cycles: ${count(n)} accesses (${total ? ((100 * n) / total).toFixed(2) : 0}%)</title></rect><text x="${(x + columnWidth / 2).toFixed(1)}" y="${height - 6}" text-anchor="middle" class="small">${b === 0 ? "0" : 2 ** (b - 1)}</text>`;
    })
    .join("");
  return `<svg class="chart" width="${width}" height="${height + 16}" role="img" aria-label="access cost histogram"><text x="0" y="14" class="title">walk cost: accesses by cycles (TLB hits in the lowest buckets, walks above; log scale; axis: the bucket's lowest cycles)</text><g transform="translate(0,16)">${bars}</g></svg>`;
}

function cycleChart(report: RunReport): string {
  const names: [keyof RunReport["cyclesByWho"], string][] = [
    ["translation", "translation"],
    ["guestKernel", "guest kernel"],
    ["vmExits", "VM exits"],
    ["tdp", "TDP MMU"],
    ["shadow", "shadow MMU"],
    ["hypercalls", "hypercalls"],
    ["emulation", "emulation"],
  ];
  const total = Math.max(1, report.cycles);
  return barChart(
    "cycles by who spent them",
    names.map(([key, label]) => {
      const value = report.cyclesByWho[key];
      return { label, value, text: `${count(value)} (${((100 * value) / total).toFixed(1)}%)` };
    }),
    total,
  );
}

function tlbChart(report: RunReport): string {
  const bars: Bar[] = (["l1d", "l1i", "l2"] as const).map((level) => {
    const { hits, misses } = report.tlb[level];
    const lookups = hits + misses;
    const rate = lookups === 0 ? 0 : hits / lookups;
    return {
      label: `TLB ${level}`,
      value: rate,
      text: lookups === 0 ? "no lookups" : `${(100 * rate).toFixed(2)}% of ${count(lookups)}`,
    };
  });
  const nested = report.virtualization?.nestedTlb;
  if (nested) {
    const lookups = nested.hits + nested.misses;
    bars.push({
      label: "nested TLB",
      value: lookups === 0 ? 0 : nested.hits / lookups,
      text:
        lookups === 0 ? "no lookups" : `${((100 * nested.hits) / lookups).toFixed(2)}% of ${count(lookups)}`,
    });
  }
  return barChart("TLB hit rate by level", bars, 1);
}

function runTitle(report: RunReport): string {
  const source =
    report.source.kind === "trace"
      ? `${report.source.file} (${report.source.format})`
      : `workload ${report.source.name}`;
  return `${source}, ${report.mode}, ${report.guest.pageSize} pages`;
}

function table(header: string[], rows: unknown[][]): string {
  const head = header.map((cell) => `<th>${escapeHtml(cell)}</th>`).join("");
  const body = rows
    .map(
      (row) =>
        `<tr>${row.map((cell) => `<td>${escapeHtml(typeof cell === "number" ? count(cell) : cell)}</td>`).join("")}</tr>`,
    )
    .join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function runsTable(reports: RunReport[]): string {
  return table(
    [
      "run",
      "accesses",
      "cycles",
      "cycles/access",
      "STLB misses",
      "walks",
      "refs/walk",
      "walk refs from DRAM",
      "#PF",
      "VM exits",
    ],
    reports.map((r) => [
      runTitle(r),
      r.accesses,
      r.cycles,
      r.cyclesPerAccess.toFixed(2),
      r.tlb.l2.misses,
      r.walks,
      r.refsPerWalk.toFixed(2),
      r.cache.dram,
      r.exits.pageFault,
      r.virtualization?.exitsTotal ?? 0,
    ]),
  );
}

function compareTable(result: CompareResult): string {
  return table(
    [
      "mode",
      "guest/host",
      "cycles/access",
      "vs native",
      "STLB misses",
      "walks",
      "refs/walk",
      "nested refs",
      "VM exits",
      "hv cycles",
    ],
    result.rows.map((row) => [
      row.mode,
      `${row.guestPageSize}/${row.hostPageSize ?? "-"}`,
      row.cyclesPerAccess.toFixed(2),
      `${row.slowdown.toFixed(2)}x`,
      row.stlbMisses,
      row.walks,
      row.refsPerWalk.toFixed(2),
      row.nestedRefs,
      row.vmExits,
      `${(100 * row.hypervisorCycleShare).toFixed(1)}%`,
    ]),
  );
}

/** The page as a string. */
export function renderHtmlReport(reports: RunReport[], compare?: CompareResult): string {
  const sections = reports
    .map(
      (report) =>
        `<section><h2>${escapeHtml(runTitle(report))}</h2>${
          report.error ? `<p class="error">stopped early: ${escapeHtml(report.error)}</p>` : ""
        }<p>${count(report.accesses)} accesses, ${count(report.cycles)} cycles (${report.cyclesPerAccess} per access), ${count(report.walks)} walks (${report.refsPerWalk} references each)</p>${tlbChart(report)}${histogramChart(report)}${cycleChart(report)}</section>`,
    )
    .join("");
  const comparison =
    (reports.length > 1 ? `<section><h2>runs side by side</h2>${runsTable(reports)}</section>` : "") +
    (compare
      ? `<section><h2>translation techniques compared (workload ${escapeHtml(compare.workload.name)}, ${count(compare.workload.records)} records)</h2>${compareTable(compare)}</section>`
      : "");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>memvirt report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
svg.chart{display:block;margin:1em 0;font-size:12px}
svg .title{font-weight:bold}svg .small{font-size:10px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.error{color:#b00}
</style></head><body><h1>memvirt report</h1>${sections}${comparison}</body></html>
`;
}
