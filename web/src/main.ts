// The playground page: the views, their controls, the URL, and the worker that runs the core.
// A run started from the URL (run=1) marks document.body.dataset.state "running", then "done" or
// "error", and leaves the report JSON in <script type="application/json" id="report">.
import "./style.css";
import {
  DMA_WORKLOADS,
  MULTI_VM_WORKLOADS,
  TRACE_FORMATS,
  type WalkExplanation,
  WORKLOAD_NAMES,
} from "memvirt";
import lsXzUrl from "../../examples/ls.lk.xz?url";
import overcommitExample from "../../examples/overcommit.json";
import type { WorkloadFlags } from "../../src/cli/options.js";
import { renderCompare, renderSeedTable } from "./compare.js";
import { $, h } from "./dom.js";
import { renderOvercommit } from "./overcommit.js";
import type { Reply, Request, RunDone, SourceChoice } from "./protocol.js";
import { renderSee } from "./see.js";
import {
  DEFAULTS,
  effectiveConfig,
  getKey,
  type Json,
  type PageState,
  readUrl,
  setKey,
  VIEWS,
  type View,
  writeUrl,
} from "./state.js";
import { renderWalk, type WalkState } from "./walk.js";

interface Preset {
  name: string;
  description: string;
  sources: { id: string; title: string }[];
  config: Json;
}
const PRESETS = Object.values(
  import.meta.glob<Preset>("../../presets/*.json", { eager: true, import: "default" }),
).sort((a, b) => a.name.localeCompare(b.name));

/** The trace the site ships (examples/ls.lk.xz), replayed as a user's file would be; examples/ holds more. */
const SHIPPED: Record<string, { url: string; about: string }> = {
  "ls.lk.xz": { url: lsXzUrl, about: "ls, valgrind lackey, xz-compressed, 200,000 records" },
};

const KINDS = ["read", "write", "fetch"];

const { state, run: runOnLoad } = readUrl(location.search);
let picked: File | undefined;
let lastRun: RunDone | undefined;
let walkState: WalkState | undefined;

// --- the worker ----------------------------------------------------------------------------------

let worker: Worker;
let pending: { resolve: (reply: Reply) => void; reject: (error: Error) => void } | undefined;

function startWorker(): void {
  worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module", name: "memvirt core" });
  worker.onmessage = ({ data }: MessageEvent<Reply>) => {
    if (data.type === "progress") {
      showProgress(data.fraction, data.text);
      return;
    }
    const job = pending;
    pending = undefined;
    job?.resolve(data);
  };
  worker.onerror = (event) => {
    const job = pending;
    pending = undefined;
    job?.reject(new Error(event.message || "the worker failed"));
  };
}
startWorker();

function call(request: Request, what: string): Promise<Reply> {
  if (pending) return Promise.reject(new Error("busy: cancel the running job first"));
  document.body.dataset.state = "running";
  $<HTMLButtonElement>("cancel").disabled = false;
  showProgress(null, `${what}…`);
  return new Promise<Reply>((resolve, reject) => {
    pending = { resolve, reject };
    worker.postMessage(request);
  }).finally(() => {
    $<HTMLButtonElement>("cancel").disabled = true;
  });
}

$("cancel").addEventListener("click", () => {
  if (!pending) return;
  worker.terminate();
  startWorker();
  lastRun = undefined;
  const job = pending;
  pending = undefined;
  job.reject(new Error("cancelled"));
});

function showProgress(fraction: number | null, text: string): void {
  const bar = $<HTMLProgressElement>("progress");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
  $("status-text").textContent = text;
}

function finish(outcome: "done" | "error", text: string): void {
  const bar = $<HTMLProgressElement>("progress");
  bar.value = outcome === "done" ? 1 : 0;
  $("status-text").textContent = text;
  document.body.dataset.state = outcome;
}

// --- views ---------------------------------------------------------------------------------------

/** Views whose content waits to be drawn until they are shown. */
let pendingViews: Partial<Record<View, () => void>> = {};

function drawPending(view: View): void {
  const draw = pendingViews[view];
  delete pendingViews[view];
  draw?.();
}

function setView(view: View, focus = false): void {
  state.view = view;
  drawPending(view);
  for (const name of VIEWS) {
    const tab = $(`tab-${name}`);
    const selected = name === view;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`view-${name}`).hidden = !selected;
    if (selected && focus) tab.focus();
  }
  syncUrl();
}

for (const name of VIEWS) {
  const tab = $(`tab-${name}`);
  tab.addEventListener("click", () => setView(name));
  tab.addEventListener("keydown", (event) => {
    const index = VIEWS.indexOf(name);
    const to: Record<string, number> = {
      ArrowRight: (index + 1) % VIEWS.length,
      ArrowLeft: (index + VIEWS.length - 1) % VIEWS.length,
      Home: 0,
      End: VIEWS.length - 1,
    };
    if (event.key in to) {
      event.preventDefault();
      setView(VIEWS[to[event.key]], true);
    }
  });
}

// --- the Run view's form -------------------------------------------------------------------------

const presetSelect = $<HTMLSelectElement>("preset");
presetSelect.append(
  h("option", { value: "" }, "memvirt default (Skylake-class)"),
  ...PRESETS.map((p) => h("option", { value: p.name }, p.name)),
);
const workloadSelect = $<HTMLSelectElement>("workload");
workloadSelect.append(
  h("optgroup", { label: "Synthetic" }, ...WORKLOAD_NAMES.map((n) => h("option", {}, n))),
  h(
    "optgroup",
    { label: "Devices (DMA through the IOMMU)" },
    ...DMA_WORKLOADS.map((n) => h("option", {}, n)),
  ),
  h(
    "optgroup",
    { label: "Several VMs, overcommitted host" },
    ...MULTI_VM_WORKLOADS.map((n) => h("option", {}, n)),
  ),
);
$<HTMLSelectElement>("shipped").append(
  h("option", { value: "" }, "none: pick or drop a file"),
  ...Object.entries(SHIPPED).map(([name, t]) => h("option", { value: name }, `${name}: ${t.about}`)),
);
$<HTMLSelectElement>("format").append(...["auto", ...TRACE_FORMATS].map((f) => h("option", {}, f)));

const presetOf = (name: string) => PRESETS.find((p) => p.name === name);
const configText = $<HTMLTextAreaElement>("config");
const formSelects = [...document.querySelectorAll<HTMLSelectElement>("select[data-key]")];
const fieldIds: [keyof PageState, string][] = [
  ["records", "records"],
  ["footprint", "footprint"],
  ["seed", "seed"],
  ["zipf", "zipf"],
  ["write", "write"],
  ["vms", "vms"],
  ["pages", "pages"],
  ["seconds", "seconds"],
];

function editorJson(): Json | undefined {
  try {
    return JSON.parse(state.config.trim() || "{}") as Json;
  } catch {
    return undefined;
  }
}

/** Puts the state into the controls, and checks the config. */
function showState(): void {
  presetSelect.value = state.preset;
  const preset = presetOf(state.preset);
  $("preset-about").textContent = preset
    ? `${preset.description} Sources: ${preset.sources.map((s) => s.title).join("; ")}.`
    : "The built-in machine: a Skylake-class core (docs/tlb-geometry.md).";
  if (document.activeElement !== configText) configText.value = state.config;
  const effective = effectiveConfig(preset?.config, state.config);
  const check = $("config-check");
  check.textContent = effective.error ?? "Valid: the CLI would accept this config.";
  check.className = `check ${effective.error ? "error" : "ok"}`;
  configText.setAttribute("aria-invalid", String(Boolean(effective.error)));
  $("effective-config").textContent = effective.text;
  for (const select of formSelects) {
    const key = select.dataset.key as string;
    const value = getKey(effective.json, key);
    const text = value === undefined ? "" : String(value);
    const fallback = select.options[0]?.value ?? "";
    select.value = [...select.options].some((o) => o.value === text) ? text : fallback;
  }
  workloadSelect.value = state.workload;
  for (const [field, id] of fieldIds) $<HTMLInputElement>(id).value = state[field] as string;
  for (const radio of document.querySelectorAll<HTMLInputElement>("input[name=source]"))
    radio.checked = radio.value === state.source;
  $("workload-fields").hidden = state.source !== "workload";
  $("trace-fields").hidden = state.source !== "trace";
  const multiVm = (MULTI_VM_WORKLOADS as readonly string[]).includes(state.workload);
  for (const element of document.querySelectorAll<HTMLElement>(".multivm")) element.hidden = !multiVm;
  $<HTMLSelectElement>("shipped").value = state.trace;
  $<HTMLSelectElement>("format").value = state.format;
  $("trace-chosen").textContent = picked
    ? `Chosen: ${picked.name} (${picked.size.toLocaleString("en-US")} bytes)`
    : "";
  $<HTMLInputElement>("gva").value = state.gva;
  $<HTMLSelectElement>("kind").value = state.kind;
  $<HTMLInputElement>("cold").checked = state.cold;
  syncUrl();
}

function syncUrl(): void {
  history.replaceState(null, "", `${location.pathname}${writeUrl(state)}`);
}

presetSelect.addEventListener("change", () => {
  state.preset = presetSelect.value;
  showState();
});
configText.addEventListener("input", () => {
  state.config = configText.value;
  showState();
});
for (const select of formSelects) {
  select.addEventListener("change", () => {
    const json = editorJson();
    if (json === undefined) {
      $("config-check").textContent = "Fix the JSON in the editor first: the form edits its keys.";
      return;
    }
    const raw = select.value;
    const value: Json | undefined =
      raw === ""
        ? undefined
        : "number" in select.dataset
          ? Number(raw)
          : "boolean" in select.dataset
            ? raw === "true"
            : raw;
    const key = select.dataset.key as string;
    // The form's default choice leaves the key to the preset; otherwise the editor sets it.
    const next = setKey(
      json,
      key,
      raw === "" || (key === "mode" && raw === "native" && !getKey(json, key)) ? undefined : value,
    );
    state.config = Object.keys(next as object).length ? JSON.stringify(next, null, 2) : "";
    configText.value = state.config;
    showState();
  });
}
workloadSelect.addEventListener("change", () => {
  state.workload = workloadSelect.value;
  showState();
});
for (const [field, id] of fieldIds) {
  $<HTMLInputElement>(id).addEventListener("input", (event) => {
    (state as unknown as Record<string, string>)[field] = (event.target as HTMLInputElement).value.trim();
    syncUrl();
  });
}
for (const radio of document.querySelectorAll<HTMLInputElement>("input[name=source]")) {
  radio.addEventListener("change", () => {
    state.source = radio.value as PageState["source"];
    showState();
  });
}
$<HTMLSelectElement>("shipped").addEventListener("change", (event) => {
  state.trace = (event.target as HTMLSelectElement).value;
  if (state.trace) picked = undefined;
  showState();
});
$<HTMLSelectElement>("format").addEventListener("change", (event) => {
  state.format = (event.target as HTMLSelectElement).value;
  syncUrl();
});
function choose(file: File | undefined): void {
  if (!file) return;
  picked = file;
  state.trace = "";
  state.source = "trace";
  showState();
}
$<HTMLInputElement>("trace-file").addEventListener("change", (event) =>
  choose((event.target as HTMLInputElement).files?.[0]),
);
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choose(event.dataTransfer?.files[0]);
});
$("gva").addEventListener("input", (event) => {
  state.gva = (event.target as HTMLInputElement).value.trim();
  syncUrl();
});
$("kind").addEventListener("change", (event) => {
  state.kind = (event.target as HTMLSelectElement).value;
  syncUrl();
});
$("cold").addEventListener("change", (event) => {
  state.cold = (event.target as HTMLInputElement).checked;
  syncUrl();
});
$("copy-link").addEventListener("click", async () => {
  const link = `${location.origin}${location.pathname}${writeUrl(state) || "?"}${writeUrl(state) ? "&" : ""}run=1`;
  const note = $("link-note");
  try {
    await navigator.clipboard.writeText(link);
    note.textContent = picked
      ? "Copied; the link cannot carry the file you picked."
      : "Copied: the link reruns this.";
  } catch {
    note.textContent = link;
  }
});

// --- jobs ----------------------------------------------------------------------------------------

function workloadFlags(): WorkloadFlags {
  const text = (value: string) => (value === "" ? undefined : value);
  return {
    // Any of the CLI's --workload choices (synthetic, dma-*, multi-VM), as commander passes them.
    workload: state.workload as WorkloadFlags["workload"],
    records: text(state.records),
    footprint: state.footprint || DEFAULTS.footprint,
    seed: text(state.seed),
    zipf: text(state.zipf),
    stride: text(state.stride),
    writeFraction: text(state.write),
    vms: text(state.vms),
    pagesPerVm: text(state.pages),
    seconds: text(state.seconds),
  };
}

function runConfig(): string {
  const effective = effectiveConfig(presetOf(state.preset)?.config, state.config);
  if (effective.error) throw new Error(effective.error);
  return effective.text;
}

async function traceSource(): Promise<SourceChoice> {
  if (picked) return { kind: "trace", name: picked.name, data: picked, format: state.format };
  const shipped = SHIPPED[state.trace];
  if (!shipped) throw new Error("Choose a trace: a shipped one, or pick or drop a file.");
  const data = await (await fetch(shipped.url)).blob();
  return { kind: "trace", name: state.trace, data, format: state.format };
}

function publishReport(report: unknown): void {
  $("report").textContent = report === undefined ? "" : JSON.stringify(report, null, 2);
}

/** A run; `last` false keeps the page marked running for a job that follows (a walk). */
async function run(last = true): Promise<boolean> {
  walkState = undefined;
  $("walk").replaceChildren();
  try {
    const source: SourceChoice =
      state.source === "trace" ? await traceSource() : { kind: "workload", workload: workloadFlags() };
    const reply = await call({ type: "run", configText: runConfig(), source }, "Running");
    if (reply.type === "error") {
      pendingViews = {};
      publishReport(reply.report);
      if (reply.report && reply.files) {
        const partial: RunDone = {
          type: "run-done",
          report: reply.report as RunDone["report"],
          files: reply.files,
          multiVm: reply.multiVm ?? false,
          recent: [],
          cpus: 1,
          seconds: 0,
        };
        renderSee($("see"), partial, reply.message);
        $("view-see").querySelector(".empty")?.remove();
      }
      finish("error", reply.message);
      return false;
    }
    if (reply.type !== "run-done") return false;
    lastRun = reply;
    publishReport(reply.report);
    $("view-see").querySelector(".empty")?.remove();
    // Charts are drawn when their view is first shown: a run leaves the page idle until then.
    pendingViews = { see: () => renderSee($("see"), reply) };
    const timeline = reply.timeline;
    if (timeline)
      pendingViews.overcommit = () =>
        renderOvercommit($("overcommit"), timeline, reply.report as Record<string, unknown>, reply.files);
    drawPending(state.view);
    showRecent(reply);
    const records = (reply.report as { accesses?: number }).accesses ?? 0;
    const text = `Done: ${records.toLocaleString("en-US")} accesses in ${reply.seconds.toFixed(2)} s.`;
    if (last) finish("done", text);
    else $("status-text").textContent = text;
    return true;
  } catch (error) {
    finish("error", (error as Error).message);
    return false;
  }
}

function showRecent(done: RunDone): void {
  const cpu = $<HTMLSelectElement>("cpu");
  cpu.replaceChildren(...Array.from({ length: done.cpus }, (_, i) => h("option", {}, String(i))));
  cpu.value = state.cpu;
  if (!state.gva && done.recent[0]) state.gva = done.recent[0].la;
  $<HTMLInputElement>("gva").value = state.gva;
  const list = h(
    "ul",
    { class: "recent" },
    ...done.recent.map((access) => {
      const b = h(
        "button",
        { type: "button" },
        `${KINDS[access.kind]} ${access.la}${done.cpus > 1 ? ` (CPU ${access.cpu})` : ""}`,
      );
      b.addEventListener("click", () => {
        state.gva = access.la;
        state.cpu = String(access.cpu);
        state.kind = KINDS[access.kind];
        showState();
        setView("walk");
        void walk();
      });
      return h("li", {}, b);
    }),
  );
  $("recent").replaceChildren(
    done.recent.length ? h("p", {}, "Accesses from the end of the run (click one to walk it):") : "",
    list,
  );
}

async function walk(): Promise<boolean> {
  if (!lastRun) {
    finish("error", "Run something first: the walk reads the tables the run built.");
    return false;
  }
  try {
    const la = BigInt(
      state.gva.startsWith("0x") || state.gva.startsWith("0X") ? state.gva : `0x${state.gva}`,
    );
    const reply = await call(
      {
        type: "walk",
        cpu: Number($<HTMLSelectElement>("cpu").value || 0),
        la: `0x${la.toString(16)}`,
        kind: Math.max(0, KINDS.indexOf(state.kind)),
        cold: state.cold,
      },
      "Walking",
    );
    if (reply.type === "error") {
      finish("error", reply.message);
      return false;
    }
    if (reply.type !== "walk-done") return false;
    const walkResult: WalkExplanation = reply.walk;
    walkState = { walk: walkResult, step: walkResult.references.length, selected: 0 };
    drawWalk();
    finish("done", `Walked: ${walkResult.references.filter((r) => !r.update).length} references.`);
    return true;
  } catch (error) {
    finish(
      "error",
      error instanceof SyntaxError
        ? `"${state.gva}" is not an address (hex, e.g. 0x7f0000001000)`
        : (error as Error).message,
    );
    return false;
  }
}

function drawWalk(): void {
  if (!walkState) return;
  const container = $("walk");
  container.dataset.references = String(walkState.walk.references.filter((r) => !r.update).length);
  renderWalk(container, walkState, drawWalk);
}

$("run").addEventListener("click", async () => {
  if (await run()) setView(lastRun?.multiVm ? "overcommit" : "see");
});
$("walk-run").addEventListener("click", () => void walk());
$("gva").addEventListener("keydown", (event) => {
  if (event.key === "Enter") void walk();
});

$("compare-run").addEventListener("click", async () => {
  try {
    const reply = await call(
      { type: "compare", configText: runConfig(), workload: workloadFlags() },
      "Comparing 14 mode and page-size pairings",
    );
    if (reply.type === "error") return finish("error", reply.message);
    if (reply.type !== "compare-done") return;
    renderCompare($("compare"), reply.result, reply.html, reply.seconds);
    finish("done", `Compared in ${reply.seconds.toFixed(1)} s.`);
  } catch (error) {
    finish("error", (error as Error).message);
  }
});

$("seed-run").addEventListener("click", async () => {
  try {
    const reply = await call({ type: "seed-table" }, "Measuring the seed table (7 techniques)");
    if (reply.type === "error") return finish("error", reply.message);
    if (reply.type !== "seed-table-done") return;
    renderSeedTable($("seed-table"), reply.rows, reply.text, reply.json, reply.seconds);
    finish("done", `Measured in ${reply.seconds.toFixed(1)} s.`);
  } catch (error) {
    finish("error", (error as Error).message);
  }
});

$("overcommit-example").addEventListener("click", async () => {
  // The README's example: examples/overcommit.json, memory-hog --pages-per-vm 2048 --records 1000000 --seconds 3.
  Object.assign(state, {
    preset: "",
    config: JSON.stringify(overcommitExample, null, 2),
    source: "workload",
    workload: "memory-hog",
    pages: "2048",
    records: "1000000",
    seconds: "3",
  });
  showState();
  await run();
});

showState();
setView(state.view);
if (runOnLoad) {
  void (async () => {
    const walkNext = state.view === "walk";
    if ((await run(!walkNext)) && walkNext) await walk();
  })();
}
