// Charts on uPlot: column charts (one series, or grouped series side by side) with categorical x
// labels, value labels over the columns and a y axis with ticks; line charts over simulated time with
// coloured bands behind them. Every chart comes with its numbers as a table, for screen readers and
// for reading exact values.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#9c755f",
];

export interface Series {
  label: string;
  values: (number | null)[];
  color?: string;
}

export interface ColumnChartSpec {
  title: string;
  labels: string[];
  series: Series[];
  xTitle: string;
  yTitle: string;
  /** arcsinh scale: reads like a log scale and keeps zero on the axis. */
  log?: boolean;
  format?: (value: number) => string;
  height?: number;
}

export interface LineChartSpec {
  title: string;
  x: number[];
  series: Series[];
  xTitle: string;
  yTitle: string;
  /** Spans of x drawn as coloured bands behind the lines (the controller's states). */
  bands?: { from: number; to: number; color: string }[];
  height?: number;
}

const compact = (n: number | null): string => {
  if (n === null || n === undefined) return "-";
  for (const [unit, size] of [
    ["G", 1e9],
    ["M", 1e6],
    ["k", 1e3],
  ] as const) {
    if (Math.abs(n) >= size) return `${Number((n / size).toPrecision(3))}${unit}`;
  }
  return String(Number(n.toPrecision(3)));
};

function powersOfTen(top: number): number[] {
  const ticks: number[] = [];
  for (let p = 1; p <= Math.max(10, top); p *= 10) ticks.push(p);
  return ticks;
}

/** Columns for series `group` of `groups`, side by side within each category's slot. */
function columns(group: number, groups: number): uPlot.Series.PathBuilder {
  return (u, seriesIdx, idx0, idx1) => {
    const fill = new Path2D();
    const xs = u.data[0];
    const ys = u.data[seriesIdx];
    const slot = u.valToPos(1, "x", true) - u.valToPos(0, "x", true);
    const width = (slot * 0.8) / groups;
    const bottom = u.bbox.top + u.bbox.height;
    for (let i = idx0; i <= idx1; i++) {
      const value = ys[i];
      if (value === null || value === undefined) continue;
      const left = u.valToPos(xs[i], "x", true) - slot * 0.4 + width * group;
      const top = Math.min(bottom, u.valToPos(value, "y", true));
      fill.rect(left, top, Math.max(1, width - 1), bottom - top);
    }
    return { stroke: fill, fill };
  };
}

/** Writes each column's value over it, where there is room. */
function valueLabels(groups: number, format: (v: number) => string): uPlot.Plugin {
  return {
    hooks: {
      draw: (u) => {
        const ctx = u.ctx;
        const ratio = uPlot.pxRatio;
        const slot = u.valToPos(1, "x", true) - u.valToPos(0, "x", true);
        const width = (slot * 0.8) / groups;
        ctx.save();
        ctx.font = `${10 * ratio}px system-ui, sans-serif`;
        ctx.fillStyle = "#333";
        ctx.textAlign = "center";
        for (let s = 1; s < u.series.length; s++) {
          u.data[s].forEach((value, i) => {
            if (value === null || value === undefined) return;
            const text = format(value);
            if (ctx.measureText(text).width > width + 2 * ratio) return;
            const x = u.valToPos(u.data[0][i], "x", true) - slot * 0.4 + width * (s - 1) + width / 2;
            const y = Math.min(u.bbox.top + u.bbox.height, u.valToPos(value, "y", true)) - 3 * ratio;
            ctx.fillText(text, x, Math.max(u.bbox.top + 10 * ratio, y));
          });
        }
        ctx.restore();
      },
    },
  };
}

/** Redraws the chart at its container's width. */
function fitWidth(chart: uPlot, container: HTMLElement, height: number): void {
  const observer = new ResizeObserver(() => {
    const width = Math.max(240, Math.floor(container.clientWidth));
    if (width !== chart.width) chart.setSize({ width, height });
  });
  observer.observe(container);
}

function figure(title: string, table: HTMLTableElement): { figure: HTMLElement; plot: HTMLDivElement } {
  const element = document.createElement("figure");
  element.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  const plot = document.createElement("div");
  plot.className = "plot";
  plot.setAttribute("role", "img");
  plot.setAttribute("aria-label", `${title} (values in the table below)`);
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "Values";
  details.append(summary, table);
  element.append(caption, plot, details);
  return { figure: element, plot };
}

export function valuesTable(header: string[], rows: (string | number)[][]): HTMLTableElement {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const cell of header) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = cell;
    head.append(th);
  }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    row.forEach((cell, i) => {
      const td = tr.insertCell();
      td.textContent = typeof cell === "number" ? cell.toLocaleString("en-US") : cell;
      if (i > 0) td.className = "num";
    });
  }
  return table;
}

export function columnChart(container: HTMLElement, spec: ColumnChartSpec): HTMLElement {
  const given = spec.format ?? compact;
  const format = (value: number | null) => (value === null || value === undefined ? "-" : given(value));
  const height = spec.height ?? 260;
  const rows = spec.labels.map((label, i) => [
    label,
    ...spec.series.map((s) => (s.values[i] === null ? "-" : format(s.values[i] as number))),
  ]);
  const { figure: element, plot } = figure(
    spec.title,
    valuesTable([spec.xTitle, ...spec.series.map((s) => s.label)], rows),
  );
  container.append(element);
  const n = spec.labels.length;
  const groups = spec.series.length;
  const max = Math.max(0, ...spec.series.flatMap((s) => s.values.map((v) => v ?? 0)));
  const options: uPlot.Options = {
    width: Math.max(240, plot.clientWidth || container.clientWidth || 600),
    height,
    legend: { show: groups > 1, live: false },
    cursor: { show: false },
    scales: {
      x: { time: false, range: () => [-0.5, n - 0.5] },
      y: spec.log
        ? { distr: 4, asinh: 1, range: () => [0, Math.max(10, max * 1.5)] }
        : { range: () => [0, max > 0 ? max * 1.15 : 1] },
    },
    axes: [
      {
        label: spec.xTitle,
        splits: () => spec.labels.map((_, i) => i),
        values: (_u, splits) => splits.map((i) => spec.labels[i] ?? ""),
        // Turned when the labels would not fit side by side in about 360 px.
        rotate: n * Math.max(...spec.labels.map((l) => l.length)) * 6.5 > 360 ? -40 : 0,
        size:
          n * Math.max(...spec.labels.map((l) => l.length)) * 6.5 > 360
            ? 24 + 5 * Math.max(...spec.labels.map((l) => l.length))
            : 40,
        gap: 4,
      },
      {
        label: spec.yTitle,
        values: (_u, splits) => splits.map(format),
        size: 60,
        // A log-like scale gets its ticks at 0 and the powers of ten.
        splits: spec.log ? () => [0, ...powersOfTen(max * 1.5)] : undefined,
      },
    ],
    series: [
      {},
      ...spec.series.map((s, i) => ({
        label: s.label,
        fill: s.color ?? PALETTE[i % PALETTE.length],
        stroke: s.color ?? PALETTE[i % PALETTE.length],
        paths: columns(i, groups),
        points: { show: false },
      })),
    ],
    plugins: [valueLabels(groups, format)],
  };
  const chart = new uPlot(
    options,
    [spec.labels.map((_, i) => i), ...spec.series.map((s) => s.values)] as uPlot.AlignedData,
    plot,
  );
  fitWidth(chart, plot, height);
  return element;
}

export function lineChart(container: HTMLElement, spec: LineChartSpec): HTMLElement {
  const height = spec.height ?? 300;
  const rows = spec.x.map((x, i) => [
    String(x),
    ...spec.series.map((s) => (s.values[i] === null ? "-" : (s.values[i] as number))),
  ]);
  const { figure: element, plot } = figure(
    spec.title,
    valuesTable([spec.xTitle, ...spec.series.map((s) => s.label)], rows),
  );
  container.append(element);
  const bands: uPlot.Plugin = {
    hooks: {
      drawClear: (u) => {
        const ctx = u.ctx;
        ctx.save();
        for (const band of spec.bands ?? []) {
          const left = u.valToPos(band.from, "x", true);
          const right = u.valToPos(band.to, "x", true);
          ctx.fillStyle = band.color;
          ctx.fillRect(left, u.bbox.top, Math.max(1, right - left), u.bbox.height);
        }
        ctx.restore();
      },
    },
  };
  const chart = new uPlot(
    {
      width: Math.max(240, plot.clientWidth || container.clientWidth || 600),
      height,
      scales: { x: { time: false } },
      axes: [
        { label: spec.xTitle },
        { label: spec.yTitle, values: (_u, splits) => splits.map(compact), size: 60 },
      ],
      series: [
        { label: spec.xTitle },
        ...spec.series.map((s, i) => ({
          label: s.label,
          stroke: s.color ?? PALETTE[i % PALETTE.length],
          width: 2,
          points: { show: false },
        })),
      ],
      plugins: [bands],
    },
    [spec.x, ...spec.series.map((s) => s.values)] as uPlot.AlignedData,
    plot,
  );
  fitWidth(chart, plot, height);
  return element;
}
