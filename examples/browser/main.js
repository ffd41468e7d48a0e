// The page: one walk on the main thread (which may only compile and instantiate the core
// asynchronously: Machine.create), then two traces replayed in a Worker, whose answer it shows.

import { defaultConfig, Machine } from "memvirt";
import wasmFile from "memvirt/wasm/release.wasm";
import { fourLevelWalk } from "./walk.js";

const out = document.querySelector("#out");
try {
  const mainThreadWalk = fourLevelWalk(
    await Machine.create(defaultConfig().machine, { wasm: new URL(wasmFile, import.meta.url) }),
  );
  const fetched = (name) => fetch(new URL(`../../${name}`, import.meta.url));
  const config = await (await fetched("ept.json")).text();
  // One trace as bytes in memory, one (xz-compressed) as the stream of its download.
  const bytes = await (await fetched("ls-head.lk")).arrayBuffer();
  const stream = (await fetched("ls.lk.xz")).body;
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  const answer = await new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (event) => reject(new Error(event.message));
    const traces = [
      { name: "ls-head.lk", trace: bytes },
      { name: "ls.lk.xz", trace: stream },
    ];
    worker.postMessage({ config, configName: "ept.json", traces }, [bytes, stream]);
  });
  globalThis.memvirtResult = { mainThreadWalk, ...answer };
} catch (error) {
  globalThis.memvirtResult = { error: String(error?.stack ?? error) };
}
out.textContent = JSON.stringify(globalThis.memvirtResult, null, 2);
document.title = "memvirt: done";
