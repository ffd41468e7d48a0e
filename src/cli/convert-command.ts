// `memvirt convert IN --out OUT`: any trace to memvirt's own format, with a progress bar; an interrupt
// or bad input leaves neither OUT nor OUT.tmp.
import type { BuildName } from "../core/wasm.js";
import { convertTrace } from "../trace/convert.js";
import type { TraceFormatOption } from "../trace/formats.js";
import { count } from "../util/count.js";
import type { CommandIo } from "./io.js";
import { attempt, finish } from "./outcome.js";
import { ProgressBar } from "./progress.js";

export interface ConvertFlags {
  format?: TraceFormatOption;
  out: string;
  json?: boolean;
  quiet?: boolean;
  build: BuildName;
}

export async function convertCommand(input: string, flags: ConvertFlags, io: CommandIo): Promise<number> {
  const stream = io.progress(flags.quiet);
  const progress = new ProgressBar(input, !stream, stream);
  let result: Awaited<ReturnType<typeof convertTrace>> | undefined;
  const ending = await attempt(async () => {
    result = await convertTrace(input, flags.format ?? "auto", flags.out, {
      build: flags.build,
      signal: io.signal,
      onProgress: (records, fileBytes) => progress.update(records, fileBytes),
    });
  });
  progress.stop();
  if (result)
    io.print(
      flags.json
        ? JSON.stringify(result, null, 2)
        : `converted ${result.input} (${result.format}): ${count(result.records)} records, ${count(result.bytesWritten)} bytes in ${result.output}`,
    );
  if (ending?.interrupted) ending.line = `memvirt: ${ending.message}: ${flags.out} not written`;
  return finish(ending);
}
