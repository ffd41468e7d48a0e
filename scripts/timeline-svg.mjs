#!/usr/bin/env node
// Draws a `memvirt run --timeline FILE.csv` as an SVG line chart: host free pages, pages saved by
// KSM, held by balloons, compressed in zswap and on swap, against simulated seconds, with the
// controller's state as a band along the bottom, in the playground's colours (from the build).
// Usage: node scripts/timeline-svg.mjs IN.csv OUT.svg
import { readFileSync, writeFileSync } from "node:fs";
import { STATE_COLORS } from "../dist/src/report/timeline-colors.js";

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node scripts/timeline-svg.mjs TIMELINE.csv CHART.svg");
  process.exit(2);
}
const [headerLine, ...lines] = readFileSync(input, "utf8").trim().split("\n");
const header = headerLine.split(",");
const rows = lines.map((line) => line.split(","));
const column = (name) => {
  const index = header.indexOf(name);
  if (index < 0) throw new Error(`${input}: no column ${name}`);
  return rows.map((row) => row[index]);
};
const seconds = column("seconds").map(Number);
const series = [
  { name: "host free", key: "host_free_pages", color: "#1f77b4" },
  { name: "KSM sharing", key: "ksm_pages_sharing", color: "#2ca02c" },
  { name: "balloons", key: "balloon_actual", color: "#ff7f0e" },
  { name: "zswap", key: "zswap_stored_pages", color: "#9467bd" },
  { name: "swap", key: "swap_pages", color: "#d62728" },
].map((s) => ({ ...s, values: column(s.key).map(Number) }));
const states = column("controller_state");

const width = 760;
const height = 360;
const left = 70;
const right = 150;
const top = 20;
const bottom = 60;
const plotW = width - left - right;
const plotH = height - top - bottom;
const maxX = Math.max(...seconds);
const maxY = Math.max(1, ...series.flatMap((s) => s.values));
const x = (t) => left + (t / (maxX || 1)) * plotW;
const y = (v) => top + plotH - (v / maxY) * plotH;
const stateColor = STATE_COLORS;

const parts = [];
parts.push(
  `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
);
parts.push(`<rect width="${width}" height="${height}" fill="white"/>`);
// The controller's state along the bottom of the plot.
for (let i = 0; i + 1 < seconds.length; i++) {
  parts.push(
    `<rect x="${x(seconds[i]).toFixed(1)}" y="${top + plotH + 4}" width="${Math.max(0.5, x(seconds[i + 1]) - x(seconds[i])).toFixed(1)}" height="10" fill="${stateColor[states[i]] ?? "#eee"}"/>`,
  );
}
parts.push(
  `<text x="${left}" y="${top + plotH + 26}">controller state band: ${[...new Set(states)].join(", ")}</text>`,
);
// Axes and ticks.
parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="black"/>`);
parts.push(
  `<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="black"/>`,
);
for (let i = 0; i <= 5; i++) {
  const v = (maxY * i) / 5;
  parts.push(
    `<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${Math.round(v).toLocaleString("en-US")}</text>`,
  );
  parts.push(`<line x1="${left}" y1="${y(v)}" x2="${left + plotW}" y2="${y(v)}" stroke="#ddd"/>`);
  const t = (maxX * i) / 5;
  parts.push(`<text x="${x(t)}" y="${top + plotH + 42}" text-anchor="middle">${t.toFixed(1)} s</text>`);
}
parts.push(
  `<text x="14" y="${top + plotH / 2}" transform="rotate(-90 14 ${top + plotH / 2})" text-anchor="middle">4 KiB pages</text>`,
);
// One polyline per series, and the legend.
series.forEach((s, i) => {
  const points = s.values.map((v, j) => `${x(seconds[j]).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${points}"/>`);
  parts.push(
    `<line x1="${left + plotW + 12}" y1="${top + 10 + i * 18}" x2="${left + plotW + 30}" y2="${top + 10 + i * 18}" stroke="${s.color}" stroke-width="2"/>`,
  );
  parts.push(`<text x="${left + plotW + 36}" y="${top + 14 + i * 18}">${s.name}</text>`);
});
parts.push("</svg>");
writeFileSync(output, `${parts.join("\n")}\n`);
