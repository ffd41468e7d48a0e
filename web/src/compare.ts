// The Compare view: `memvirt compare` (every mode and page-size pairing) as a grouped chart and a
// table, and `memvirt compare --seed-table`, measured in this browser.
import { COMPARE_COLUMNS, type CompareResult, compareCells, type SeedRow } from "memvirt";
import { columnChart } from "./charts.js";
import { count, download, h, table } from "./dom.js";

const MODE_ORDER = ["native", "pv", "shadow", "ept", "npt"];

export function renderCompare(
  container: HTMLElement,
  result: CompareResult,
  html: string,
  seconds: number,
): void {
  container.replaceChildren();
  const spec = result.workload;
  container.append(
    h(
      "h2",
      {},
      `${spec.name}: ${count(spec.records)} records over ${count(spec.footprint)} bytes, seed ${spec.seed}`,
    ),
    h(
      "p",
      { class: "downloads" },
      download(
        "compare.json",
        "application/json",
        `${JSON.stringify(result, null, 2)}\n`,
        "Download compare.json",
      ),
      download("compare.html", "text/html", html, "Download compare.html"),
      h("span", { class: "note" }, ` measured in ${seconds.toFixed(1)} s`),
    ),
  );
  // Grouped by mode, one column per page-size pairing (guest/host).
  const pairings = [...new Set(result.rows.map((r) => `${r.guestPageSize}/${r.hostPageSize ?? "-"}`))];
  const modes = MODE_ORDER.filter((m) => result.rows.some((r) => r.mode === m));
  const series = pairings.map((pairing) => ({
    label: pairing === "4K/-" || pairing === "2M/-" ? `${pairing.slice(0, 2)} (native)` : pairing,
    values: modes.map(
      (mode) =>
        result.rows.find((r) => r.mode === mode && `${r.guestPageSize}/${r.hostPageSize ?? "-"}` === pairing)
          ?.cyclesPerAccess ?? null,
    ),
  }));
  const charts = h("div", { class: "charts wide" });
  container.append(charts);
  columnChart(charts, {
    title: "Cycles per access by mode, a column per guest/host page-size pairing",
    labels: modes,
    series,
    xTitle: "mode",
    yTitle: "cycles per access",
    log: true,
    height: 300,
  });
  columnChart(charts, {
    title: "VM exits per million accesses by mode",
    labels: modes,
    series: pairings.map((pairing, i) => ({
      label: series[i].label,
      values: modes.map(
        (mode) =>
          result.rows.find(
            (r) => r.mode === mode && `${r.guestPageSize}/${r.hostPageSize ?? "-"}` === pairing,
          )?.exitsPerMillionAccesses ?? null,
      ),
    })),
    xTitle: "mode",
    yTitle: "exits per million accesses",
    log: true,
    height: 300,
  });
  container.append(
    h(
      "div",
      { class: "table-scroll" },
      table(COMPARE_COLUMNS, result.rows.map(compareCells), "compare-table"),
    ),
  );
}

export function renderSeedTable(
  container: HTMLElement,
  rows: SeedRow[],
  text: string,
  json: string,
  seconds: number,
): void {
  container.replaceChildren(
    h("h2", {}, "Memory-virtualization techniques, measured"),
    h(
      "p",
      { class: "downloads" },
      download("seed-table.txt", "text/plain", `${text}\n`, "Download seed-table.txt"),
      download("seed-table.json", "application/json", `${json}\n`, "Download seed-table.json"),
      h("span", { class: "note" }, ` measured in ${seconds.toFixed(1)} s`),
    ),
    h(
      "div",
      { class: "table-scroll" },
      table(
        [
          "technique",
          "typical scenario",
          "cycles/access",
          "baseline",
          "slowdown",
          "vs",
          "memory saved",
          "exits/M",
        ],
        rows.map((r) => [
          r.technique,
          r.scenario,
          r.cyclesPerAccess.toFixed(2),
          r.baselineCyclesPerAccess.toFixed(2),
          r.slowdown === null ? `+${r.cyclesPerAccess.toFixed(2)} cyc` : `${r.slowdown.toFixed(2)}x`,
          r.baseline,
          `${count(r.pagesSaved)} pages (${(100 * r.savedShare).toFixed(1)}%)`,
          r.exitsPerMillionAccesses,
        ]),
        "seed-table",
      ),
    ),
  );
}
