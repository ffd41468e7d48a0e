// Reports as CSV: every report (or sweep row) flattened to dotted keys (`tlb.l1d.hits`), one row
// each, under one header that is the union of their keys in first-seen order. Arrays become
// indexed keys (`histogram.3`). Values are quoted when they hold a comma, quote or newline.

export function flatten(
  value: unknown,
  prefix = "",
  out: Record<string, unknown> = {},
): Record<string, unknown> {
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value)
      ? value.map((item, i) => [String(i), item] as const)
      : Object.entries(value);
    for (const [key, item] of entries) flatten(item, prefix ? `${prefix}.${key}` : key, out);
  } else {
    out[prefix] = value;
  }
  return out;
}

function cell(value: unknown): string {
  if (value === undefined || value === null) return "";
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function csvHeader(rows: readonly Record<string, unknown>[]): string[] {
  const keys: string[] = [];
  const seen = new Set<string>();
  for (const row of rows) {
    for (const key of Object.keys(row)) {
      if (!seen.has(key)) {
        seen.add(key);
        keys.push(key);
      }
    }
  }
  return keys;
}

/** The rows (reports or any JSON-like objects) as CSV text with a header line. */
export function formatCsv(rows: readonly unknown[]): string {
  const flat = rows.map((row) => flatten(row));
  const keys = csvHeader(flat);
  const lines = [keys.map(cell).join(",")];
  for (const row of flat) lines.push(keys.map((key) => cell(row[key])).join(","));
  return lines.join("\n");
}
