// The core in a Web Worker: the page posts a config and traces (bytes in memory, or a stream still
// downloading); the worker runs a 4-level walk on a bare machine, replays each trace in a Simulation
// of its own and posts the reports back.
// esbuild --loader:.wasm=file copies the core beside the bundle and gives its path from there.

import {
  buildReport,
  defaultConfig,
  loadCore,
  Machine,
  parseConfigText,
  replayTraceData,
  Simulation,
} from "memvirt";
import wasmFile from "memvirt/wasm/release.wasm";
import { fourLevelWalk } from "./walk.js";

self.onmessage = async ({ data }) => {
  try {
    // Compiled once for this worker; every machine after it (a Simulation's too) instantiates it.
    await loadCore({ wasm: new URL(wasmFile, import.meta.url) });
    const walk = fourLevelWalk(new Machine(defaultConfig().machine));
    const config = parseConfigText(data.config, data.configName);
    const reports = {};
    for (const { name, trace } of data.traces) {
      const simulation = new Simulation(config);
      simulation.start();
      const replay = await replayTraceData(simulation, trace, "auto", { name });
      reports[name] = buildReport(simulation, { kind: "trace", file: name, format: replay.format });
    }
    self.postMessage({ walk, reports });
  } catch (error) {
    self.postMessage({ error: String(error?.stack ?? error) });
  }
};
