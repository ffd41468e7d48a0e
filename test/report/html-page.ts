// Reading memvirt's HTML report pages back in the tests: the charts (caption, axes, bars, legend) and
// the config blocks, from the markup src/report/html.ts writes.

export function unescapeHtml(text: string): string {
  return text.replace(/&#(\d+);/g, (_, code) => String.fromCharCode(Number(code)));
}

const texts = (markup: string, cls: string) =>
  [...markup.matchAll(new RegExp(`<text class="${cls}"[^>]*>([^<]*)</text>`, "g"))].map((m) =>
    unescapeHtml(m[1]),
  );

export interface Chart {
  caption: string;
  /** Tick labels of the value axis (the y-axis of a column chart, the x-axis of a bar chart). */
  ticks: string[];
  /** Column labels under the x-axis of a column chart. */
  labels: string[];
  /** The values printed on the bars. */
  values: string[];
  /** Hover texts of the bars. */
  bars: string[];
  axisTitles: string[];
  legend: string[];
}

export function charts(html: string): Chart[] {
  return [...html.matchAll(/<figure class="chart">([\s\S]*?)<\/figure>/g)].map(([, body]) => {
    const axis =
      /<g class="y-axis">([\s\S]*?)<\/g>/.exec(body)?.[1] ??
      /<g class="x-axis">([\s\S]*?)<\/g>/.exec(body)?.[1];
    return {
      caption: unescapeHtml(/<figcaption>([^<]*)<\/figcaption>/.exec(body)?.[1] ?? ""),
      ticks: texts(axis ?? "", "tick"),
      labels: /<svg class="columns"/.test(body) ? texts(body, "label") : [],
      values: texts(body, "value"),
      bars: [...body.matchAll(/<rect [^>]*><title>([^<]*)<\/title><\/rect>/g)].map((m) => unescapeHtml(m[1])),
      axisTitles: texts(body, "axis-title"),
      legend: [...body.matchAll(/<span><i [^>]*><\/i>([^<]*)<\/span>/g)].map((m) => unescapeHtml(m[1])),
    };
  });
}

export interface ConfigBlock {
  id?: string;
  summary: string;
  /** The JSON the block shows, parsed; undefined when the block holds an error instead. */
  config?: unknown;
  error?: string;
}

export function configBlocks(html: string): ConfigBlock[] {
  return [
    ...html.matchAll(
      /<details class="config"(?: id="([^"]*)")?><summary>([^<]*)<\/summary>([\s\S]*?)<\/details>/g,
    ),
  ].map(([, id, summary, body]) => {
    const json = /<pre>([\s\S]*?)<\/pre>/.exec(body)?.[1];
    const error = /<p class="error">([^<]*)<\/p>/.exec(body)?.[1];
    return {
      id,
      summary: unescapeHtml(summary),
      config: json === undefined ? undefined : JSON.parse(unescapeHtml(json)),
      error: error === undefined ? undefined : unescapeHtml(error),
    };
  });
}
