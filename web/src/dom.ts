// Small DOM helpers: elements from a tag, attributes and children; numbers and addresses as text.
import { count } from "../../src/util/count.js";

type Child = Node | string | number | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | number | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (name === "class") element.className = String(value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

export const hex = (n: bigint | number) => `0x${n.toString(16)}`;
export const percent = (part: number, whole: number) =>
  whole > 0 ? `${((100 * part) / whole).toFixed(2)}%` : "-";

/** A table of label/value rows. */
export function facts(rows: [string, Child][]): HTMLTableElement {
  return h(
    "table",
    { class: "facts" },
    h(
      "tbody",
      {},
      ...rows.map(([label, value]) => h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, value))),
    ),
  );
}

/** A table with a header row. */
export function table(header: string[], rows: Child[][], className = ""): HTMLTableElement {
  return h(
    "table",
    { class: className || undefined },
    h("thead", {}, h("tr", {}, ...header.map((cell) => h("th", { scope: "col" }, cell)))),
    h(
      "tbody",
      {},
      ...rows.map((row) =>
        h(
          "tr",
          {},
          ...row.map((cell) =>
            h(
              "td",
              { class: typeof cell === "number" ? "num" : undefined },
              typeof cell === "number" ? count(cell) : cell,
            ),
          ),
        ),
      ),
    ),
  );
}

/** A link that downloads `text` as a file. */
export function download(name: string, type: string, text: string, label: string): HTMLAnchorElement {
  const url = URL.createObjectURL(new Blob([text], { type }));
  return h("a", { href: url, download: name, class: "button" }, label);
}

export { count };
