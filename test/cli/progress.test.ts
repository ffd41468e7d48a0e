// Progress everywhere (issue 16): every command that can run for more than a second draws a bar on a
// terminal's stderr, with what it counts (records, operations, rows), done of total, rate and ETA; and
// none with --quiet or when stderr is not a terminal. In this process, on a stand-in terminal.
import { describe, expect, it } from "vitest";
import { SEED_TABLE_ORDER } from "../../src/overcommit/seed-table.js";
import { fakeTerminal, runMemvirt as run } from "./in-process.js";

/** A stand-in terminal; aborts `controller`, when given, once it is shown anything. */
const terminal = (isTTY = true, controller?: AbortController) =>
  fakeTerminal(isTTY, () => controller?.abort("SIGINT"));

const COMMANDS: [string, string[], RegExp][] = [
  [
    "a synthetic workload",
    ["run", "--workload", "uniform", "--records", "100000", "--footprint", "64M"],
    /\/100,000 records \| [-\d,]+ records\/s \| ETA/,
  ],
  [
    "a multi-VM run",
    ["run", "--workload", "cloud-mix", "--vms", "2", "--pages-per-vm", "256", "--records", "30000"],
    /\/[\d,]+ records \| [-\d,]+ records\/s \| ETA/,
  ],
  ["a DMA workload", ["run", "--workload", "dma-nic", "--records", "500"], /\/500 operations \| /],
  [
    "compare",
    ["compare", "--workload", "uniform", "--records", "5000", "--modes", "native,ept"],
    /\/[\d,]+ records \| [-\d,]+ records\/s \| ETA/,
  ],
  [
    "compare of IOMMU modes",
    ["compare", "--workload", "dma-nvme", "--records", "100"],
    /\/[\d,]+ operations \| /,
  ],
];

// What surrounds the core, not the core: on the release build only.
describe.skipIf(process.env.MEMVIRT_BUILD === "debug")("progress on a terminal, and none elsewhere", () => {
  it.each(COMMANDS)("%s draws done of total, rate and ETA on a terminal", async (_, args, bar) => {
    const tty = terminal();
    const result = await run([...args, "--json"], { progress: tty });
    expect(result.code).toBe(0);
    expect(tty.text).toMatch(bar);
  });

  it.each(COMMANDS)("%s draws nothing with --quiet, nor when stderr is not a terminal", async (_, args) => {
    const quiet = terminal();
    expect((await run([...args, "--json", "--quiet"], { progress: quiet })).code).toBe(0);
    expect(quiet.text).toBe("");
    const pipe = terminal(false);
    expect((await run([...args, "--json"], { progress: pipe })).code).toBe(0);
    expect(pipe.text).toBe("");
  });

  it("compare --seed-table draws its rows as a bar (stopped once it is drawn)", async () => {
    const controller = new AbortController();
    const tty = terminal(true, controller);
    const result = await run(["compare", "--seed-table", "--json"], {
      progress: tty,
      signal: controller.signal,
    });
    expect(tty.text).toContain(`0/${SEED_TABLE_ORDER.length} rows | - rows/s | ETA`);
    expect(result.code).toBe(130);
    expect(JSON.parse(result.output).interrupted).toBe(true);
  });
});
