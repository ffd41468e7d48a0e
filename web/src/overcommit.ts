// The Overcommit view: a multi-VM run's host memory over simulated time (free, KSM-shared, ballooned,
// in zswap, swapped, and each VM's pages) with the controller's state as bands behind it, from the
// columns `memvirt run --timeline` writes.

import { STATE_COLORS } from "../../src/report/timeline-colors.js";
import { lineChart, PALETTE } from "./charts.js";
import { count, download, facts, h, table } from "./dom.js";
import type { Timeline } from "./protocol.js";

export function renderOvercommit(
  container: HTMLElement,
  timeline: Timeline,
  report: Record<string, unknown>,
  files: { name: string; type: string; text: string }[],
): void {
  container.replaceChildren();
  const column = (name: string) => {
    const index = timeline.header.indexOf(name);
    return timeline.rows.map((row) => (index < 0 ? null : Number(row[index])));
  };
  const seconds = column("seconds") as number[];
  const states = timeline.rows.map((row) => row[timeline.header.indexOf("controller_state")] ?? "-");
  const bands: { from: number; to: number; color: string }[] = [];
  const spans: [string, number, number][] = [];
  states.forEach((state, i) => {
    const from = seconds[i];
    const to = seconds[i + 1] ?? from;
    const last = spans[spans.length - 1];
    if (last && last[0] === state) last[2] = to;
    else spans.push([state, from, to]);
  });
  for (const [state, from, to] of spans) bands.push({ from, to, color: STATE_COLORS[state] ?? "#f5f5f5" });

  const source = report.source as { name: string; vms: number };
  const controller = report.controller as
    | { secondsInState?: Record<string, number>; transitions?: number }
    | undefined;
  container.append(
    h("h2", {}, `${source.name}: ${source.vms} VMs on one host, ${report.simulatedSeconds} s simulated`),
    h(
      "p",
      { class: "downloads" },
      ...files.map((f) => download(f.name, f.type, f.text, `Download ${f.name}`)),
    ),
    facts([
      [
        "host memory",
        `${count((report.memory as { hostTotalPages: number }).hostTotalPages)} pages of 4 KiB`,
      ],
      [
        "controller",
        controller?.secondsInState
          ? `${controller.transitions ?? 0} transitions; seconds in state ${Object.entries(
              controller.secondsInState,
            )
              .map(([state, s]) => `${state} ${s}`)
              .join(", ")}`
          : "off",
      ],
    ]),
    h(
      "p",
      { class: "legend" },
      "Controller state behind the lines: ",
      ...spans
        .map(([state]) => state)
        .filter((state, i, all) => all.indexOf(state) === i)
        .map((state) =>
          h("span", { class: "swatch", style: `background:${STATE_COLORS[state] ?? "#f5f5f5"}` }, state),
        ),
    ),
  );
  const charts = h("div", { class: "charts wide" });
  container.append(charts);
  lineChart(charts, {
    title: "Host memory over simulated time: free, KSM-shared, ballooned, in zswap, swapped (4 KiB pages)",
    x: seconds,
    xTitle: "simulated seconds",
    yTitle: "pages",
    series: [
      { label: "host free", values: column("host_free_pages"), color: PALETTE[0] },
      { label: "KSM sharing", values: column("ksm_pages_sharing"), color: PALETTE[4] },
      { label: "ballooned", values: column("balloon_actual"), color: PALETTE[1] },
      { label: "in zswap", values: column("zswap_stored_pages"), color: PALETTE[6] },
      { label: "swapped", values: column("swap_pages"), color: PALETTE[2] },
    ],
    bands,
  });
  const vms = timeline.header.filter((name) => /^vm\d+_pages$/.test(name));
  lineChart(charts, {
    title: "Host pages used by each VM, and by all",
    x: seconds,
    xTitle: "simulated seconds",
    yTitle: "pages",
    series: [
      { label: "host used", values: column("host_used_pages"), color: "#555" },
      ...vms.map((name, i) => ({
        label: name.replace("_pages", ""),
        values: column(name),
        color: PALETTE[(i + 3) % PALETTE.length],
      })),
    ],
    bands,
  });
  const log = (controller as { transitionLog?: { seconds: number; from: string; to: string }[] } | undefined)
    ?.transitionLog;
  if (log?.length) {
    container.append(
      h("h3", {}, "Controller transitions"),
      table(
        ["simulated second", "from", "to"],
        log.map((t) => [String(t.seconds), t.from, t.to]),
      ),
    );
  }
}
