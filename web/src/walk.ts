// The Walk view: one translation, placed in its grid. A native walk is a column of four or five
// entries; an EPT/NPT walk is the two-dimensional grid, a row per guest level (the nested walk of that
// guest table's guest-physical address, then the guest entry) and a last row for the final address.
// Stepping reveals the references in the order the core made them; each cell opens its decoded entry.
import type { WalkCell, WalkExplanation } from "memvirt";
import { count, facts, h, hex, table } from "./dom.js";

const LEVEL_NAMES: Record<number, string> = { 5: "PML5E", 4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE" };
const KINDS = ["read", "write", "fetch"];

const SOURCE_TEXT: Record<WalkCell["source"], string> = {
  l1: "read, L1 hit",
  l2: "read, L2 hit",
  llc: "read, LLC hit",
  dram: "read from DRAM",
  tlb: "not needed: TLB hit",
  psc: "skipped: paging-structure cache",
  "nested-tlb": "skipped: nested TLB",
  "nested-psc": "skipped: nested PSC",
  "not-reached": "not reached (fault)",
};

function cellName(walk: WalkExplanation, cell: WalkCell): string {
  const nestedPrefix = walk.dimensions === "ept" ? "EPT " : "nested ";
  if (cell.dimension === "nested") {
    const what = cell.guestLevel === 0 ? "final gPA" : `guest ${LEVEL_NAMES[cell.guestLevel]} table`;
    return `${nestedPrefix}${LEVEL_NAMES[cell.nestedLevel]} for the ${what}`;
  }
  return walk.dimensions === "native"
    ? LEVEL_NAMES[cell.guestLevel]
    : `guest ${LEVEL_NAMES[cell.guestLevel]}`;
}

export interface WalkState {
  walk: WalkExplanation;
  /** References revealed so far (0 to all). */
  step: number;
  selected: number;
}

export function renderWalk(container: HTMLElement, state: WalkState, onChange: () => void): void {
  const { walk } = state;
  const reads = walk.references.filter((r) => !r.update);
  const total = walk.references.length;
  container.replaceChildren();
  const pageSize = walk.result.pageSize ? `${walk.result.pageSize / 1024} KiB page` : "";
  const dims =
    walk.dimensions === "native"
      ? `${walk.guestLevels}-level walk (one dimension)`
      : `${walk.guestLevels}-level guest tables through ${walk.nestedLevels}-level ${walk.dimensions.toUpperCase()}`;
  const outcome = walk.fault
    ? `${walk.fault.name} ${hex(walk.fault.code)}${walk.fault.gpa !== undefined ? `, gPA ${hex(walk.fault.gpa)}` : ""}`
    : `translated to ${hex(walk.result.pa)} (${pageSize})`;
  container.append(
    h("h2", {}, `${KINDS[walk.kind] ?? "access"} of ${hex(walk.la)} on CPU ${walk.cpu}`),
    facts([
      ["walk", dims],
      ["outcome", outcome],
      [
        "references",
        walk.tlbHit
          ? `none: ${walk.tlbHit.toUpperCase()} TLB hit`
          : `${reads.length} (${walk.result.nestedRefs ?? 0} nested)${total > reads.length ? ` and ${total - reads.length} A/D updates` : ""}; the core counted ${walk.result.refs}`,
      ],
      [
        "cycles",
        `${count(walk.result.cycles)} for the access (TLB probes, PSC hits, references, A/D updates)`,
      ],
      [
        "caches",
        walk.caches
          .map(
            (c) =>
              `${c.name}: ${c.hits} hit${c.hits === 1 ? "" : "s"}, ${c.misses} miss${c.misses === 1 ? "" : "es"}`,
          )
          .join("; ") || "-",
      ],
    ]),
  );

  // Step controls: the first `step` references are shown as made; the rest wait.
  const stepText = h("span", { class: "step-text", "aria-live": "polite" }, stepLabel(state));
  const button = (label: string, title: string, to: () => number, disabled: boolean) => {
    const b = h("button", { type: "button", title, "aria-label": title, disabled }, label);
    b.addEventListener("click", () => {
      state.step = Math.max(0, Math.min(total, to()));
      const current = walk.references[state.step - 1];
      if (current && current.cell >= 0) state.selected = current.cell;
      onChange();
    });
    return b;
  };
  container.append(
    h(
      "div",
      { class: "stepper", role: "group", "aria-label": "Step through the references" },
      button("« First", "Before the first reference", () => 0, state.step === 0),
      button("‹ Back", "Previous reference", () => state.step - 1, state.step === 0),
      button("Next ›", "Next reference", () => state.step + 1, state.step >= total),
      button("All »", "All references", () => total, state.step >= total),
      stepText,
    ),
  );

  container.append(grid(state, onChange));
  const selected = walk.cells[state.selected];
  if (selected) container.append(detail(walk, selected, state));
  if (walk.fault) container.append(faultPanel(walk));
  container.append(
    h("h3", {}, "References in order"),
    scroll(
      table(
        ["#", "entry", "host-physical address", "value", "served by", "cycles"],
        walk.references.map((r, i) => [
          String(i + 1),
          r.cell >= 0
            ? `${r.update ? "A/D update of " : ""}${cellName(walk, walk.cells[r.cell])}`
            : "(not on the path)",
          hex(r.address),
          hex(r.value),
          r.servedBy.toUpperCase(),
          r.cycles,
        ]),
        "references",
      ),
    ),
  );
}

const scroll = (element: HTMLElement) => h("div", { class: "table-scroll" }, element);

function stepLabel(state: WalkState): string {
  const total = state.walk.references.length;
  if (total === 0) return "No references.";
  if (state.step === 0) return `Step through ${total} references.`;
  const r = state.walk.references[state.step - 1];
  const cell = r.cell >= 0 ? cellName(state.walk, state.walk.cells[r.cell]) : "an entry off the path";
  return `Reference ${state.step} of ${total}: ${r.update ? "A/D update of " : ""}${cell}, ${r.servedBy.toUpperCase()}, ${r.cycles} cycles.`;
}

function grid(state: WalkState, onChange: () => void): HTMLElement {
  const { walk } = state;
  const twoD = walk.dimensions !== "native";
  const nestedLevels = Array.from({ length: walk.nestedLevels }, (_, i) => walk.nestedLevels - i);
  const rows = [...new Set(walk.cells.map((c) => c.guestLevel))];
  const header = twoD
    ? ["", ...nestedLevels.map((n) => `${walk.dimensions.toUpperCase()} ${LEVEL_NAMES[n]}`), "guest entry"]
    : ["", "entry"];
  const revealed = (cell: WalkCell) =>
    cell.order === undefined ? state.step >= walk.references.length : cell.order <= state.step;
  const cellButton = (cell: WalkCell | undefined) => {
    if (!cell) return h("td", { class: "none" });
    const index = walk.cells.indexOf(cell);
    const shown = revealed(cell);
    const current = state.step > 0 && walk.references[state.step - 1]?.cell === index;
    const source = shown ? cell.source : "pending";
    const label = `${cellName(walk, cell)}: ${shown ? SOURCE_TEXT[cell.source] : "not yet"}${cell.order ? `, reference ${cell.order}` : ""}`;
    const b = h(
      "button",
      {
        type: "button",
        class: `cell src-${source}${current ? " current" : ""}${state.selected === index ? " selected" : ""}`,
        "aria-label": label,
        "aria-pressed": state.selected === index ? "true" : "false",
      },
      h("span", { class: "order" }, cell.order && shown ? `#${cell.order}` : ""),
      h("span", { class: "addr" }, hex(cell.address)),
      h("span", { class: "val" }, shown || cell.order === undefined ? hex(cell.value) : "…"),
      h("span", { class: "src" }, shown ? SOURCE_TEXT[cell.source] : "…"),
      h("span", { class: "cyc" }, shown && cell.order ? `${cell.cycles} cycles` : ""),
    );
    b.addEventListener("click", () => {
      state.selected = index;
      onChange();
    });
    return h("td", {}, b);
  };
  const body = rows.map((row) => {
    const inRow = walk.cells.filter((c) => c.guestLevel === row);
    const rowTitle = !twoD
      ? `level ${row}`
      : row === 0
        ? `final gPA ${hex(inRow[0]?.guestPhysical ?? 0n)}`
        : `guest level ${row} (${LEVEL_NAMES[row]}): table at gPA ${hex((inRow.find((c) => c.dimension === "guest")?.guestPhysical ?? inRow[0]?.guestPhysical ?? 0n) & ~0xfffn)}`;
    const cells = twoD
      ? [
          ...nestedLevels.map((n) =>
            cellButton(inRow.find((c) => c.dimension === "nested" && c.nestedLevel === n)),
          ),
          cellButton(inRow.find((c) => c.dimension === "guest")),
        ]
      : [cellButton(inRow[0])];
    return h("tr", {}, h("th", { scope: "row" }, rowTitle), ...cells);
  });
  return h(
    "div",
    { class: "grid-scroll" },
    h(
      "table",
      {
        class: `walk-grid ${twoD ? "two-d" : "one-d"}`,
        "aria-label": twoD ? "The two-dimensional walk" : "The walk",
      },
      h("thead", {}, h("tr", {}, ...header.map((cell) => h("th", { scope: "col" }, cell)))),
      h("tbody", {}, ...body),
    ),
  );
}

function detail(walk: WalkExplanation, cell: WalkCell, state: WalkState): HTMLElement {
  const shown = cell.order === undefined || cell.order <= state.step || state.step >= walk.references.length;
  return h(
    "section",
    { class: "detail", "aria-label": "The selected entry" },
    h("h3", {}, cellName(walk, cell)),
    facts([
      ["host-physical address", hex(cell.address)],
      [
        "guest-physical",
        cell.guestPhysical === undefined
          ? "-"
          : `${hex(cell.guestPhysical)} ${cell.dimension === "nested" ? "(being translated)" : "(the entry's)"}`,
      ],
      ["value", shown ? hex(cell.value) : "…"],
      [
        "served",
        shown
          ? `${SOURCE_TEXT[cell.source]}${cell.order ? `, reference ${cell.order}, ${cell.cycles} cycles` : ""}`
          : "…",
      ],
      [
        "A/D update",
        cell.update
          ? `reference ${cell.update.order}: wrote ${hex(cell.update.value)} (${cell.update.servedBy.toUpperCase()}, ${cell.update.cycles} cycles)`
          : "none",
      ],
      ["frame", hex(cell.value & 0x000f_ffff_ffff_f000n)],
    ]),
    h(
      "table",
      { class: "bits", "aria-label": "Decoded bits" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "bit"),
          ...cell.bits.map((b) => h("th", { scope: "col", title: `bits ${b.bits}` }, b.name)),
        ),
      ),
      h(
        "tbody",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "row" }, "value"),
          ...cell.bits.map((b) => h("td", { class: b.value ? "on" : "off" }, String(b.value))),
        ),
      ),
    ),
  );
}

function faultPanel(walk: WalkExplanation): HTMLElement {
  const fault = walk.fault!;
  return h(
    "section",
    { class: "fault", "aria-label": "The fault" },
    h("h3", {}, `${fault.name} ${hex(fault.code)}`),
    fault.gpa !== undefined ? h("p", {}, `Guest-physical address: ${hex(fault.gpa)}`) : null,
    fault.bits.length
      ? scroll(
          table(
            ["bit", "name", "value", "meaning"],
            fault.bits.map((b) => [String(b.bit), b.name, b.set ? "1" : "0", b.meaning]),
            "fault-bits",
          ),
        )
      : h("p", {}, "No error code: the walk did not start, or the exit reports none."),
  );
}
