// The See view: a run's statistics (the object `memvirt run --json` prints), its charts, and the
// JSON, CSV and HTML reports to download, byte for byte the CLI's.
import { bucketLabel, CYCLES_BY_WHO, type RunReport } from "memvirt";
import { columnChart, PALETTE } from "./charts.js";
import { count, download, facts, h, percent } from "./dom.js";
import type { RunDone } from "./protocol.js";

const rate = (hm: { hits: number; misses: number }) => {
  const lookups = hm.hits + hm.misses;
  return lookups === 0 ? null : hm.hits / lookups;
};
const asPercent = (v: number) => `${(100 * v).toFixed(1)}%`;

function runTitle(report: RunReport): string {
  const source =
    report.source.kind === "trace"
      ? `trace ${report.source.file} (${report.source.format})`
      : `workload ${report.source.name}`;
  return `${source} under ${report.mode}, ${report.guest.pageSize} guest pages${report.virtualization ? `, ${report.virtualization.host.pageSize} host pages` : ""}`;
}

export function renderSee(container: HTMLElement, done: RunDone, error?: string): void {
  container.replaceChildren();
  const downloads = h(
    "p",
    { class: "downloads" },
    ...done.files.map((f) => download(f.name, f.type, f.text, `Download ${f.name}`)),
  );
  if (error) container.append(h("p", { class: "error", role: "alert" }, error));
  if (done.multiVm) {
    renderMultiVmSummary(container, done.report as Record<string, unknown>, downloads);
    return;
  }
  const report = done.report as RunReport;
  container.append(
    h("h2", {}, runTitle(report)),
    downloads,
    facts([
      ["accesses", count(report.accesses)],
      ["cycles", `${count(report.cycles)} (${report.cyclesPerAccess} per access)`],
      [
        "page walks",
        `${count(report.walks)} (${report.refsPerWalk} references each, ${count(report.walkRefs)} in all)`,
      ],
      [
        "walk references by dimension",
        report.virtualization
          ? `guest ${count(report.virtualization.walkRefsByDimension.guest)}, nested ${count(report.virtualization.walkRefsByDimension.nested)}`
          : "one dimension",
      ],
      [
        "walk references served by",
        `L1 ${count(report.cache.l1.hits)}, L2 ${count(report.cache.l2.hits)}, LLC ${count(report.cache.llc.hits)}, DRAM ${count(report.cache.dram)}`,
      ],
      [
        "faults (exits to the guest kernel)",
        `${count(report.exits.pageFault)} #PF, ${count(report.exits.generalProtection)} #GP`,
      ],
      [
        "VM exits",
        report.virtualization
          ? `${count(report.virtualization.exitsTotal)} (${
              Object.entries(report.virtualization.exits)
                .filter(([, n]) => n > 0)
                .map(([reason, n]) => `${reason} ${count(n)}`)
                .join(", ") || "none"
            })`
          : "-",
      ],
      ["run took", `${done.seconds.toFixed(2)} s in this browser`],
    ]),
  );
  const charts = h("div", { class: "charts" });
  container.append(charts);

  const tlbLabels = ["L1 DTLB", "L1 ITLB", "L2 TLB (STLB)"];
  const tlbRates = [rate(report.tlb.l1d), rate(report.tlb.l1i), rate(report.tlb.l2)];
  if (report.virtualization) {
    tlbLabels.push("nested TLB");
    tlbRates.push(rate(report.virtualization.nestedTlb));
  }
  for (const [level, hm] of Object.entries(report.psc)) {
    tlbLabels.push(`PSC ${level}`);
    tlbRates.push(rate(hm));
  }
  columnChart(charts, {
    title: "TLB and paging-structure-cache hit rate by level (no bar: no lookups)",
    labels: tlbLabels,
    series: [{ label: "hit rate", values: tlbRates, color: PALETTE[0] }],
    xTitle: "structure",
    yTitle: "hit rate",
    format: asPercent,
  });

  let last = report.histogram.length - 1;
  while (last > 0 && report.histogram[last] === 0) last--;
  const buckets = report.histogram.slice(0, last + 1);
  columnChart(charts, {
    title:
      "Access-cost histogram: accesses by the cycles spent translating them (TLB hits low, walks higher)",
    labels: buckets.map((_, b) => bucketLabel(b)),
    series: [{ label: "accesses", values: buckets, color: PALETTE[1] }],
    xTitle: "cycles per access",
    yTitle: "accesses (arcsinh scale)",
    log: true,
  });

  const who = CYCLES_BY_WHO;
  columnChart(charts, {
    title: `Cycles by who spent them (of ${count(report.cycles)})`,
    labels: who.map(([, label]) => label),
    series: [{ label: "cycles", values: who.map(([key]) => report.cyclesByWho[key]), color: PALETTE[2] }],
    xTitle: "who",
    yTitle: "cycles",
  });
  const share = who
    .map(([key, label]) => `${label} ${percent(report.cyclesByWho[key], report.cycles)}`)
    .join(", ");
  container.append(h("p", { class: "note" }, `Shares: ${share}.`));
  container.append(
    h(
      "details",
      {},
      h("summary", {}, "The report as JSON (memvirt run --json)"),
      h("pre", {}, JSON.stringify(report, null, 2)),
    ),
  );
}

function renderMultiVmSummary(
  container: HTMLElement,
  report: Record<string, unknown>,
  downloads: HTMLElement,
): void {
  const memory = report.memory as {
    hostTotalPages: number;
    hostFreePages: number;
    usedByVm: number[];
    saved: Record<string, number>;
  };
  const source = report.source as { name: string; vms: number };
  container.append(
    h("h2", {}, `multi-VM workload ${source.name}, ${source.vms} VMs under ${report.mode}`),
    downloads,
    facts([
      ["accesses", count(report.accesses as number)],
      ["cycles", `${count(report.cycles as number)} (${report.cyclesPerAccess} per access)`],
      ["simulated time", `${report.simulatedSeconds} s`],
      [
        "host memory",
        `${count(memory.hostTotalPages)} pages, ${count(memory.hostFreePages)} free at the end`,
      ],
      ["used by VM", memory.usedByVm.map(count).join(", ")],
      [
        "saved",
        Object.entries(memory.saved)
          .map(([k, v]) => `${k} ${count(v)}`)
          .join(", "),
      ],
    ]),
    h("p", {}, "The Overcommit view draws host memory and the controller's states over simulated time."),
  );
  const charts = h("div", { class: "charts" });
  container.append(charts);
  const cycles = report.cyclesByMechanism as Record<string, number>;
  columnChart(charts, {
    title: "Cycles by mechanism",
    labels: Object.keys(cycles),
    series: [{ label: "cycles", values: Object.values(cycles), color: PALETTE[2] }],
    xTitle: "mechanism",
    yTitle: "cycles",
  });
  container.append(
    h(
      "details",
      {},
      h("summary", {}, "The report as JSON (memvirt run --json)"),
      h("pre", {}, JSON.stringify(report, null, 2)),
    ),
  );
}
