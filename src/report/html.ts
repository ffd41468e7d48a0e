// `--report out.html`: self-contained pages (inline CSS and SVG drawn here, no scripts, nothing
// fetched). Every page shows the effective config that produced it as JSON in a collapsible block.
// - A run: TLB hit rates by level, the access-cost histogram and the cycle breakdown; for the dma-*
//   workloads the IOMMU's hit rates and figures first.
// - `memvirt compare`: cycles per access and VM exits per million accesses, grouped by mode with one bar
//   per page-size pairing, then the techniques' table; with a DMA workload, the IOMMU modes' cycles per
//   translation and invalidations, then their table.
// - A run of several VMs: host memory by VM and by what each mechanism saved, TLB hit rates, the exits,
//   shootdowns and cycles of each mechanism, and the guests.
// - `memvirt sweep`: the cells side by side in a grid of configs x traces, charts comparing them, each
//   config's JSON, then every cell's own charts.
// Every column chart is one function (`columnChart`) with a y-axis of ticks and values and labelled
// columns, so the histogram and the comparisons read the same way.

import { type CompareResult, compareTable } from "../cli/compare.js";
import { IOMMU_COMPARE_COLUMNS, type IommuCompareResult, iommuCompareCells } from "../iommu/compare.js";
import { type IommuReport, iommuRows } from "../iommu/report.js";
import type { OvercommitReport } from "../overcommit/report.js";
import { count } from "../util/count.js";
import { CYCLES_BY_WHO, effectiveConfig, type RunReport } from "./report.js";

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"];
/** Width of a character of the 11 px chart font, for laying out labels without measuring them. */
const CHAR = 6.2;

function escapeHtml(text: unknown): string {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A number in at most three significant digits with k/M/G: 4.49, 553, 90.2k, 1.2M. */
function compact(n: number): string {
  const three = (x: number) => String(Number(x.toPrecision(3)));
  for (const [unit, size] of [
    ["G", 1e9],
    ["M", 1e6],
    ["k", 1e3],
  ] as const) {
    if (Math.abs(n) >= size) return `${three(n / size)}${unit}`;
  }
  return three(n);
}

// --- scales and charts ----------------------------------------------------------------------------

interface Scale {
  /** Where a value sits, 0 (the axis) to 1 (the top tick). */
  at(value: number): number;
  ticks: number[];
  log: boolean;
}

/** Ticks at 0 and steps of 1, 2, 2.5 or 5 times a power of ten, about five of them. */
function linearScale(max: number): Scale {
  const raw = max > 0 ? max / 5 : 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * power).find((s) => s >= raw) ?? raw;
  const top = Math.max(step, Math.ceil(max / step - 1e-9) * step);
  const ticks: number[] = [];
  for (let i = 0; i * step <= top + step / 2; i++) ticks.push(+(i * step).toPrecision(12));
  return { at: (value) => Math.max(0, value) / top, ticks, log: false };
}

/** log10(1 + value), so 0 sits on the axis; ticks at every power of ten up to the top. */
function logScale(max: number): Scale {
  const decades = Math.max(1, Math.ceil(Math.log10(Math.max(1, max)) - 1e-9));
  const span = Math.log10(1 + 10 ** decades);
  // No tick at 0: it would sit on top of the tick at 1. A bar of 0 has no height and reads "0".
  const ticks = Array.from({ length: decades + 1 }, (_, i) => 10 ** i);
  return { at: (value) => Math.log10(1 + Math.max(0, value)) / span, ticks, log: true };
}

/** Log when the positive values span more than two decades, else linear. */
function autoScale(values: number[]): Scale {
  const positive = values.filter((v) => v > 0);
  const max = Math.max(0, ...values);
  return positive.length > 1 && max / Math.min(...positive) > 100 ? logScale(max) : linearScale(max);
}

interface Series {
  name: string;
  color: string;
}

interface Column {
  label: string;
  /** One value per series; undefined draws no bar (that series has no value in this column). */
  values: (number | undefined)[];
  /** The hover text of each bar. */
  notes?: string[];
}

interface ColumnChartSpec {
  /** The chart's full title, set as the figure's caption so it wraps instead of being cut off. */
  title: string;
  yTitle: string;
  xTitle: string;
  series: Series[];
  columns: Column[];
  scale: "linear" | "log" | "auto";
}

function figure(title: string, svg: string, legend = ""): string {
  return `<figure class="chart"><figcaption>${escapeHtml(title)}</figcaption>${svg}${legend}</figure>`;
}

function legend(series: Series[]): string {
  return `<p class="legend">${series
    .map((s) => `<span><i style="background:${s.color}"></i>${escapeHtml(s.name)}</span>`)
    .join("")}</p>`;
}

/**
 * Columns of bars grouped on the x-axis (one bar per series with a value), a y-axis with ticks and
 * values, gridlines, each bar's value above it, and the axis titles. Labels that do not fit under their
 * column are turned 40 degrees.
 */
function columnChart(spec: ColumnChartSpec): string {
  const all = spec.columns.flatMap((column) => column.values.filter((v): v is number => v !== undefined));
  const max = Math.max(0, ...all);
  const scale =
    spec.scale === "log" ? logScale(max) : spec.scale === "linear" ? linearScale(max) : autoScale(all);
  // Single-series charts (the histogram) widen their bars to fill about 560 px.
  const bar =
    spec.series.length > 1 ? 18 : Math.max(22, Math.min(40, Math.floor(560 / spec.columns.length) - 4));
  const groupGap = spec.series.length > 1 ? 22 : 4;
  const widths = spec.columns.map(
    (column) => Math.max(1, column.values.filter((v) => v !== undefined).length) * bar,
  );
  const tickLabels = scale.ticks.map((tick) => compact(tick));
  const left = 30 + CHAR * Math.max(...tickLabels.map((label) => label.length)) + 8;
  const plotHeight = 200;
  const top = 12 + CHAR * Math.max(1, ...all.map((v) => compact(v).length));
  const turned = spec.columns.some((column, i) => column.label.length * CHAR > widths[i] + groupGap - 2);
  const longest = Math.max(1, ...spec.columns.map((column) => column.label.length));
  const labelDepth = turned ? longest * CHAR * Math.sin((40 * Math.PI) / 180) + 14 : 16;
  const plotWidth = widths.reduce((sum, w) => sum + w + groupGap, groupGap);
  const width = Math.ceil(left + plotWidth + 12);
  const height = Math.ceil(top + plotHeight + labelDepth + 24);
  const y = (value: number) => top + plotHeight * (1 - scale.at(value));

  const grid = scale.ticks
    .map((tick, i) => {
      const at = y(tick).toFixed(1);
      return `<line class="grid" x1="${left}" x2="${left + plotWidth}" y1="${at}" y2="${at}"/><line x1="${left - 4}" x2="${left}" y1="${at}" y2="${at}"/><text class="tick" x="${left - 7}" y="${at}" dy="0.35em" text-anchor="end">${escapeHtml(tickLabels[i])}</text>`;
    })
    .join("");
  const yAxis = `<g class="y-axis">${grid}<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotHeight}"/><text class="axis-title" transform="translate(12,${top + plotHeight / 2}) rotate(-90)" text-anchor="middle">${escapeHtml(spec.yTitle)}</text></g>`;

  let x = left + groupGap;
  const columns = spec.columns
    .map((column, c) => {
      const start = x;
      let bars = "";
      column.values.forEach((value, s) => {
        if (value === undefined) return;
        const barTop = y(value);
        const h = top + plotHeight - barTop;
        const series = spec.series[s];
        const note = column.notes?.[s] ?? `${series.name}: ${compact(value)}`;
        bars += `<rect x="${(x + 1).toFixed(1)}" y="${barTop.toFixed(1)}" width="${bar - 2}" height="${h.toFixed(1)}" fill="${series.color}"><title>${escapeHtml(`${column.label}, ${note}`)}</title></rect><text class="value" transform="translate(${(x + bar / 2 + 3).toFixed(1)},${(barTop - 3).toFixed(1)}) rotate(-90)">${escapeHtml(compact(value))}</text>`;
        x += bar;
      });
      if (bars === "") x += bar;
      const middle = (start + widths[c] / 2).toFixed(1);
      const baseline = top + plotHeight + 14;
      const label = turned
        ? `<text class="label" transform="translate(${middle},${baseline}) rotate(-40)" text-anchor="end">${escapeHtml(column.label)}</text>`
        : `<text class="label" x="${middle}" y="${baseline}" text-anchor="middle">${escapeHtml(column.label)}</text>`;
      x += groupGap;
      return `<g class="column">${bars}</g>${label}`;
    })
    .join("");
  const xAxis = `<g class="x-axis"><line x1="${left}" x2="${left + plotWidth}" y1="${top + plotHeight}" y2="${top + plotHeight}"/>${columns}<text class="axis-title" x="${left + plotWidth / 2}" y="${height - 6}" text-anchor="middle">${escapeHtml(spec.xTitle)}</text></g>`;
  const svg = `<svg class="columns" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(spec.title)}">${yAxis}${xAxis}</svg>`;
  // The legend names the series that have a bar (a sweep's failed config has none).
  const shown = spec.series.filter((_, s) => spec.columns.some((column) => column.values[s] !== undefined));
  return figure(spec.title, svg, spec.series.length > 1 ? legend(shown) : "");
}

interface Bar {
  label: string;
  value: number;
  text: string;
}

/** Horizontal bars against an x-axis of ticks (0 to `max`, the largest value when omitted). */
function barChart(title: string, axisTitle: string, bars: Bar[], max?: number, tick = compact): string {
  const rowHeight = 22;
  const labelWidth = 8 + CHAR * Math.max(...bars.map((bar) => bar.label.length));
  const barWidth = 360;
  const scale = linearScale(max ?? Math.max(1e-12, ...bars.map((bar) => bar.value)));
  const textWidth = CHAR * Math.max(...bars.map((bar) => bar.text.length)) + 12;
  const width = Math.ceil(labelWidth + barWidth + textWidth);
  const axisY = bars.length * rowHeight + 6;
  const height = axisY + 36;
  const rows = bars
    .map((bar, i) => {
      const y = 4 + i * rowHeight;
      const w = Math.min(1, scale.at(bar.value)) * barWidth;
      return `<text class="label" x="${labelWidth - 6}" y="${y + 14}" text-anchor="end">${escapeHtml(bar.label)}</text><rect x="${labelWidth}" y="${y + 2}" width="${w.toFixed(1)}" height="${rowHeight - 6}" fill="${PALETTE[i % PALETTE.length]}"/><text class="value" x="${(labelWidth + w + 6).toFixed(1)}" y="${y + 14}">${escapeHtml(bar.text)}</text>`;
    })
    .join("");
  const ticks = scale.ticks
    .map((value) => {
      const x = (labelWidth + scale.at(value) * barWidth).toFixed(1);
      return `<line x1="${x}" x2="${x}" y1="${axisY}" y2="${axisY + 4}"/><text class="tick" x="${x}" y="${axisY + 15}" text-anchor="middle">${escapeHtml(tick(value))}</text>`;
    })
    .join("");
  const axis = `<g class="x-axis"><line x1="${labelWidth}" x2="${labelWidth + barWidth}" y1="${axisY}" y2="${axisY}"/>${ticks}<text class="axis-title" x="${labelWidth + barWidth / 2}" y="${height - 4}" text-anchor="middle">${escapeHtml(axisTitle)}</text></g>`;
  const svg = `<svg class="bars" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(title)}">${rows}${axis}</svg>`;
  return figure(title, svg);
}

// --- a run ----------------------------------------------------------------------------------------

/** Bucket b of the histogram holds accesses of 0 cycles (b = 0) or of 2^(b-1) to 2^b - 1 cycles. */
export function bucketLabel(b: number): string {
  if (b <= 1) return String(b);
  return `${2 ** (b - 1)}–${2 ** b - 1}`;
}

/** The access-cost histogram, up to its last non-empty bucket, on a log scale. */
function histogramChart(report: RunReport): string {
  const histogram = report.histogram as number[];
  let last = histogram.length - 1;
  while (last > 0 && histogram[last] === 0) last--;
  const buckets = histogram.slice(0, last + 1);
  const total = buckets.reduce((sum, n) => sum + n, 0);
  return columnChart({
    title:
      "Access-cost histogram: accesses by cycles spent translating them (TLB hits fall in the lowest buckets, page walks above; log scale)",
    yTitle: "accesses (log scale)",
    xTitle: "cycles per access",
    series: [{ name: "accesses", color: PALETTE[0] }],
    columns: buckets.map((n, b) => ({
      label: bucketLabel(b),
      values: [n],
      notes: [`${count(n)} accesses (${total ? ((100 * n) / total).toFixed(2) : 0}%)`],
    })),
    scale: "log",
  });
}

function cycleChart(report: RunReport): string {
  const names = CYCLES_BY_WHO;
  const total = Math.max(1, report.cycles);
  return barChart(
    "Cycles by who spent them: the hardware's translation work and each kind of software handler",
    "cycles",
    names.map(([key, label]) => {
      const value = report.cyclesByWho[key];
      return { label, value, text: `${count(value)} (${((100 * value) / total).toFixed(1)}%)` };
    }),
    total,
  );
}

/** A bar of a cache's hit rate, with the lookups it is a share of. */
function hitRate(label: string, { hits, misses }: { hits: number; misses: number }): Bar {
  const lookups = hits + misses;
  const rate = lookups === 0 ? 0 : hits / lookups;
  return {
    label,
    value: rate,
    text: lookups === 0 ? "no lookups" : `${(100 * rate).toFixed(2)}% of ${count(lookups)}`,
  };
}

const percentTick = (v: number) => `${Math.round(100 * v)}%`;

function tlbChart(tlb: RunReport["tlb"], nested?: { hits: number; misses: number }): string {
  const bars = (["l1d", "l1i", "l2"] as const).map((level) => hitRate(`TLB ${level}`, tlb[level]));
  if (nested) bars.push(hitRate("nested TLB", nested));
  return barChart("TLB hit rate by level", "hit rate", bars, 1, percentTick);
}

/** The IOMMU's caches: IOTLB, context cache and paging-structure cache hit rates. */
function iommuChart(iommu: IommuReport): string {
  return barChart(
    "IOMMU hit rates: IOTLB, context cache and paging-structure cache, over the DMA requests",
    "hit rate",
    [
      hitRate("IOTLB", iommu.iotlb),
      hitRate("context cache", iommu.contextCache),
      hitRate("IO PSC", iommu.psc),
    ],
    1,
    percentTick,
  );
}

function runTitle(report: RunReport): string {
  const source =
    report.source.kind === "trace"
      ? `${report.source.file} (${report.source.format})`
      : `workload ${report.source.name}`;
  return `${source}, ${report.mode}, ${report.guest.pageSize} pages`;
}

/** A table; with no header, a plain grid of rows (the IOMMU's label/value pairs). */
function table(header: string[], rows: unknown[][]): string {
  const head = header.length
    ? `<thead><tr>${header.map((cell) => `<th>${escapeHtml(cell)}</th>`).join("")}</tr></thead>`
    : "";
  const body = rows
    .map(
      (row) =>
        `<tr>${row.map((cell) => `<td>${escapeHtml(typeof cell === "number" ? count(cell) : cell)}</td>`).join("")}</tr>`,
    )
    .join("");
  return `<table>${head}<tbody>${body}</tbody></table>`;
}

/** The config as JSON in a block the reader can open; `summary` says whose config it is. */
function configBlock(summary: string, config: unknown, note = "", id = ""): string {
  const json = JSON.stringify(config, (_, value) => (typeof value === "bigint" ? String(value) : value), 2);
  return `<details class="config"${id ? ` id="${id}"` : ""}><summary>${escapeHtml(summary)}</summary>${note ? `<p>${escapeHtml(note)}</p>` : ""}<pre>${escapeHtml(json)}</pre></details>`;
}

function runSummary(report: RunReport): string {
  return `<p>${count(report.accesses)} accesses, ${count(report.cycles)} cycles (${report.cyclesPerAccess} per access), ${count(report.walks)} walks (${report.refsPerWalk} references each), ${count(report.dirtyAssists)} D-bit assists</p>`;
}

/** Why a run stopped early, when it did. */
function stopped(report: { error?: string; interrupted?: boolean }): string {
  if (report.error) return `<p class="error">stopped early: ${escapeHtml(report.error)}</p>`;
  if (report.interrupted)
    return `<p class="error">stopped early: interrupted; the figures cover what ran</p>`;
  return "";
}

/**
 * A run's charts (and its IOMMU figures), under a heading of its own. A DMA workload's run has no CPU
 * accesses: its page leads with the IOMMU and leaves the CPU's empty charts out.
 */
function runSection(report: RunReport, heading: string, id?: string): string {
  const config = effectiveConfig(report);
  const iommu = report.iommu
    ? `<h3>IOMMU: ${escapeHtml(report.iommu.kind)}, ${escapeHtml(report.iommu.mode)}</h3>${iommuChart(report.iommu)}${table([], iommuRows(report.iommu))}`
    : "";
  const pml = report.virtualization?.pml;
  const pmlSection = pml
    ? `<h3>Page-modification logging</h3>${table(
        ["", "count", "cycles"],
        [
          ["GPAs logged by the CPUs", pml.logged, pml.logCycles],
          ["PML-full VM exits", pml.fullExits, pml.exitCycles],
          ["entries drained by the hypervisor", pml.drained, pml.drainCycles],
        ],
      )}`
    : "";
  const cpu =
    report.iommu && report.accesses === 0
      ? ""
      : `${runSummary(report)}${tlbChart(report.tlb, report.virtualization?.nestedTlb)}${histogramChart(report)}${cycleChart(report)}${pmlSection}`;
  return `<section${id ? ` id="${id}"` : ""}><h2>${escapeHtml(heading)}</h2>${stopped(report)}${
    config === undefined ? "" : configBlock("effective config (JSON)", config)
  }${report.iommu && report.accesses === 0 ? iommu + cpu : cpu + iommu}</section>`;
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

// --- compare --------------------------------------------------------------------------------------

type CompareRow = CompareResult["rows"][number];

/**
 * Columns by mode, a bar per guest/host page-size pairing, coloured the same in every chart and ordered
 * as in the table: bare metal first, then by guest page size, then by host backing.
 */
function compareColumns(result: CompareResult, value: (row: CompareRow) => number) {
  const pairing = (row: CompareRow) => `${row.guestPageSize}/${row.hostPageSize ?? "-"}`;
  const size = (page: string | null) => (page === null ? -1 : ["4K", "2M", "1G"].indexOf(page));
  const sorted = [...result.rows].sort(
    (a, b) =>
      Number(a.hostPageSize !== null) - Number(b.hostPageSize !== null) ||
      size(a.guestPageSize) - size(b.guestPageSize) ||
      size(a.hostPageSize) - size(b.hostPageSize),
  );
  const names = [...new Set(sorted.map(pairing))];
  const series = names.map((name, i) => ({
    name: `guest/host ${name}`,
    color: PALETTE[i % PALETTE.length],
  }));
  const modes = [...new Set(result.rows.map((row) => row.mode))];
  const columns = modes.map((mode) => {
    const rows = result.rows.filter((row) => row.mode === mode);
    return {
      label: mode,
      values: names.map((name) => {
        const row = rows.find((r) => pairing(r) === name);
        return row ? value(row) : undefined;
      }),
    };
  });
  return { series, columns };
}

function compareSection(result: CompareResult): string {
  const w = result.workload;
  const chart = (title: string, yTitle: string, value: (row: CompareRow) => number) =>
    columnChart({
      title,
      yTitle,
      xTitle: "translation technique",
      ...compareColumns(result, value),
      scale: "auto",
    });
  const cycles = chart(
    "Cycles per access by mode and page-size pairing (guest pages / host backing)",
    "cycles per access",
    (row) => row.cyclesPerAccess,
  );
  const exits = chart(
    "VM exits per million accesses by mode and page-size pairing",
    "VM exits per million accesses",
    (row) => row.exitsPerMillionAccesses,
  );
  const config = effectiveConfig(result);
  const { header, lines } = compareTable(result);
  const rows = table(header, lines);
  return `<section><h2>translation techniques compared (workload ${escapeHtml(w.name)}, ${count(w.records)} records, seed ${w.seed})</h2>${
    config === undefined
      ? ""
      : configBlock(
          "effective config (JSON)",
          config,
          "Each row runs this config with its mode, guest.pageSize and host.pageSize set as the row says.",
        )
  }${cycles}${exits}${rows}</section>`;
}

// --- sweep ----------------------------------------------------------------------------------------

/** One cell of a sweep page: a config of the grid against one of its traces. */
export interface SweepPageCell {
  /** The config's name in the grid. */
  config: string;
  /** The trace as the grid names it. */
  trace: string;
  status: "ok" | "error" | "not run";
  error?: string;
  report?: RunReport;
}

/** A config of the grid: its effective config, or why it could not be resolved. */
export interface SweepPageConfig {
  name: string;
  config?: unknown;
  error?: string;
}

/** The traces' file names when those are unique, else the names as the grid wrote them. */
function traceLabels(traces: string[]): Map<string, string> {
  const base = (trace: string) => trace.slice(trace.lastIndexOf("/") + 1);
  const unique = new Set(traces.map(base)).size === traces.length;
  return new Map(traces.map((trace) => [trace, unique ? base(trace) : trace]));
}

function cellCard(cell: SweepPageCell, label: string, id: string, configId: string): string {
  const r = cell.report;
  const rows: [string, string][] = r
    ? [
        ["accesses", count(r.accesses)],
        ["cycles/access", r.cyclesPerAccess.toFixed(2)],
        [
          "STLB misses",
          `${count(r.tlb.l2.misses)} (${((1000 * r.tlb.l2.misses) / Math.max(1, r.accesses)).toFixed(2)} per 1,000 accesses)`,
        ],
        ["walks", `${count(r.walks)}, ${r.refsPerWalk} refs each`],
        ["VM exits", count(r.virtualization?.exitsTotal ?? 0)],
      ]
    : [];
  const list = rows.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join("");
  return `<div class="cell ${cell.status === "ok" ? "ok" : "failed"}"><h3>${escapeHtml(cell.config)} · ${escapeHtml(label)}</h3>${
    cell.status === "ok"
      ? ""
      : `<p class="error">${escapeHtml(cell.status)}${cell.error ? `: ${escapeHtml(cell.error)}` : ""}</p>`
  }${list ? `<dl>${list}</dl>` : ""}<p><a href="#${configId}">config</a>${r ? ` · <a href="#${id}">charts</a>` : ""}</p></div>`;
}

function sweepSections(cells: SweepPageCell[], configs: SweepPageConfig[]): string {
  const names = [...new Set([...configs.map((c) => c.name), ...cells.map((c) => c.config)])];
  const traces = [...new Set(cells.map((c) => c.trace))];
  const labels = traceLabels(traces);
  const cellId = (cell: SweepPageCell) => `cell-${cells.indexOf(cell)}`;
  const configId = (name: string) => `config-${names.indexOf(name)}`;
  const find = (name: string, trace: string) => cells.find((c) => c.config === name && c.trace === trace);

  const grid = `<table class="grid"><thead><tr><th>config \\ trace</th>${traces
    .map((trace) => `<th>${escapeHtml(labels.get(trace))}</th>`)
    .join("")}</tr></thead><tbody>${names
    .map(
      (name) =>
        `<tr><th>${escapeHtml(name)}</th>${traces
          .map((trace) => {
            const cell = find(name, trace);
            return `<td>${cell ? cellCard(cell, labels.get(trace) ?? trace, cellId(cell), configId(name)) : ""}</td>`;
          })
          .join("")}</tr>`,
    )
    .join("")}</tbody></table>`;

  const series = names.map((name, i) => ({ name, color: PALETTE[i % PALETTE.length] }));
  const chart = (title: string, yTitle: string, value: (report: RunReport) => number) =>
    columnChart({
      title,
      yTitle,
      xTitle: "trace",
      series,
      columns: traces.map((trace) => ({
        label: labels.get(trace) ?? trace,
        values: names.map((name) => {
          const cell = find(name, trace);
          return cell?.status === "ok" && cell.report ? value(cell.report) : undefined;
        }),
      })),
      scale: "auto",
    });
  const charts =
    chart(
      "Cycles per access, each config against each trace (failed cells are left out)",
      "cycles per access",
      (r) => r.cyclesPerAccess,
    ) +
    chart(
      "STLB misses per 1,000 accesses, each config against each trace",
      "STLB misses per 1,000 accesses",
      (r) => (1000 * r.tlb.l2.misses) / Math.max(1, r.accesses),
    );

  const configBlocks = configs
    .map((c) =>
      c.error !== undefined
        ? `<details class="config" id="${configId(c.name)}"><summary>${escapeHtml(c.name)}: not a valid config</summary><p class="error">${escapeHtml(c.error)}</p></details>`
        : configBlock(`${c.name}: effective config (JSON)`, c.config, "", configId(c.name)),
    )
    .join("");
  const failed = cells.filter((c) => c.status !== "ok").length;
  const details = cells
    .filter((cell) => cell.report)
    .map((cell) =>
      runSection(cell.report as RunReport, `${cell.config} · ${labels.get(cell.trace)}`, cellId(cell)),
    )
    .join("");
  return `<section><h2>sweep: ${names.length} configs × ${traces.length} traces, ${cells.length} cells (${failed} failed)</h2>${grid}${charts}</section><section><h2>configs</h2>${configBlocks}</section>${details}`;
}

// --- several VMs ----------------------------------------------------------------------------------

/** Label/value rows of counters, leaving out zeros. */
function counterBars(record: Record<string, number>, unit: string): Bar[] {
  return Object.entries(record)
    .filter(([, n]) => n > 0)
    .map(([name, n]) => ({ label: name, value: n, text: `${count(n)} ${unit}` }));
}

function overcommitSection(report: OvercommitReport): string {
  const config = effectiveConfig(report);
  const m = report.memory;
  const source = report.source as { name?: string; traces?: { file: string; format: string }[] };
  const what = source.traces
    ? `${source.traces.length} traces, one VM each (${source.traces.map((t) => t.file).join(", ")})`
    : `workload ${source.name} (${m.usedByVm.length} VMs)`;
  const memory = barChart(
    `Host memory: ${count(m.hostTotalPages)} pages of 4 KiB, by VM, with the pages each mechanism saved`,
    "pages",
    [
      ...m.usedByVm.map((pages, i) => ({
        label: `VM ${i + 1}`,
        value: pages,
        text: `${count(pages)} pages`,
      })),
      { label: "free", value: m.hostFreePages, text: `${count(m.hostFreePages)} pages` },
      ...Object.entries(m.saved).map(([name, pages]) => ({
        label: `saved by ${name}`,
        value: Math.max(0, pages),
        text: `${count(pages)} pages`,
      })),
    ],
  );
  const mechanisms = (title: string, record: Record<string, number>, unit: string) => {
    const bars = counterBars(record, unit);
    return bars.length ? barChart(title, unit, bars) : `<p>${escapeHtml(title)}: none.</p>`;
  };
  return `<section><h2>${escapeHtml(`${what}, ${report.mode}, ${report.simulatedSeconds} s simulated`)}</h2>${stopped(report)}${
    config === undefined ? "" : configBlock("effective config (JSON)", config)
  }<p>${count(report.accesses)} accesses, ${count(report.cycles)} cycles (${report.cyclesPerAccess} per access), ${count(report.walks)} walks; ${count(report.virtualization.exitsTotal)} VM exits</p>${memory}${tlbChart(report.tlb)}${mechanisms(
    "VM exits each overcommit mechanism caused",
    report.exitsByMechanism,
    "exits",
  )}${mechanisms("TLB shootdowns (one per vCPU) each mechanism caused", report.invalidationsByMechanism, "shootdowns")}${mechanisms(
    "Cycles by mechanism",
    report.cyclesByMechanism,
    "cycles",
  )}<h3>guests</h3>${table(
    Object.keys(report.guests[0] ?? {}),
    report.guests.map((guest) => Object.values(guest)),
  )}</section>`;
}

// --- IOMMU modes compared -------------------------------------------------------------------------

function iommuCompareSection(result: IommuCompareResult): string {
  const config = effectiveConfig(result);
  const column = (
    title: string,
    yTitle: string,
    value: (row: IommuCompareResult["rows"][number]) => number,
  ) =>
    columnChart({
      title,
      yTitle,
      xTitle: "IOMMU mode",
      series: [{ name: yTitle, color: PALETTE[0] }],
      columns: result.rows.map((row) => ({ label: `${row.kind} ${row.mode}`, values: [value(row)] })),
      scale: "auto",
    });
  return `<section><h2>${escapeHtml(`IOMMU modes compared: ${result.workload}, ${count(result.operations)} operations`)}</h2>${stopped(result)}${
    config === undefined
      ? ""
      : configBlock(
          "effective config (JSON)",
          config,
          'Each row runs this config with its "iommu.mode" set as the row says (pass-through under EPT with 2M backing).',
        )
  }${column("Cycles per DMA translation by IOMMU mode", "cycles per translation", (r) => r.cyclesPerTranslation)}${column(
    "Invalidations by IOMMU mode (strict: one per unmap; deferred: one per flush-queue drain)",
    "invalidations",
    (r) => r.invalidations,
  )}${table(IOMMU_COMPARE_COLUMNS, result.rows.map(iommuCompareCells))}</section>`;
}

// --- pages ----------------------------------------------------------------------------------------

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:110em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}h3{font-size:1em;margin:0 0 .3em}
figure.chart{margin:1.2em 0}figcaption{font-weight:bold;margin-bottom:.3em;max-width:60em}
svg{display:block;max-width:100%;height:auto;font-size:11px}
svg line{stroke:#555}svg line.grid{stroke:#e4e4e4}svg .tick,svg .label{fill:#333}
svg .value{font-size:9px;fill:#444}svg .axis-title{font-size:11px;fill:#222}
.legend span{display:inline-block;margin-right:1.2em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}.error{color:#b00}
table.grid td{text-align:left;min-width:16em}.cell dl{display:grid;grid-template-columns:auto auto;gap:0 .8em;margin:0}
.cell dt{color:#555}.cell dd{margin:0;text-align:right}.cell.failed{background:#fff4f4}
details.config{margin:.6em 0}details.config pre{background:#f6f6f6;padding:.6em;max-height:30em;overflow:auto}
</style></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>
`;
}

/** A run's page (several runs: each, then a table of them; with a comparison: compare's page). */
export function renderHtmlReport(reports: RunReport[], compare?: CompareResult): string {
  const title =
    compare && reports.length === 0
      ? "memvirt compare"
      : reports.length === 1
        ? "memvirt run"
        : "memvirt report";
  const sections = reports.map((report) => runSection(report, runTitle(report))).join("");
  const comparison =
    (reports.length > 1 ? `<section><h2>runs side by side</h2>${runsTable(reports)}</section>` : "") +
    (compare ? compareSection(compare) : "");
  return page(title, sections + comparison);
}

/** The page of a sweep: its cells side by side, charts comparing them, each config and each cell. */
export function renderSweepReport(cells: SweepPageCell[], configs: SweepPageConfig[]): string {
  return page("memvirt sweep", sweepSections(cells, configs));
}

/** The page of a run of several VMs (a multi-VM workload, or one trace per VM). */
export function renderOvercommitReport(report: OvercommitReport): string {
  return page("memvirt run: several VMs on one host", overcommitSection(report));
}

/** The page of `memvirt compare --workload dma-*`: the IOMMU modes side by side. */
export function renderIommuCompareReport(result: IommuCompareResult): string {
  return page("memvirt compare: IOMMU modes", iommuCompareSection(result));
}
