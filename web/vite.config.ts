// The playground: a static site built from web/ into web/dist/ (npm run web:build). "memvirt" is the
// package's own browser entry (src/index.ts), so the page runs the real core, bundled with the site;
// relative URLs let the site be served from any directory of any static host.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";

const root = fileURLToPath(new URL(".", import.meta.url));
const entry = fileURLToPath(new URL("../src/index.ts", import.meta.url));
const core = new URL("../build/release.wasm", import.meta.url);
if (!existsSync(core)) throw new Error(`${fileURLToPath(core)} is missing: run \`npm run build\` first`);

/**
 * The site runs the release core only. The shared loader (src/core/wasm.ts) names both builds, so Vite
 * emits both; the debug one (three times the size) is left out of the site, where nothing asks for it.
 */
const releaseCoreOnly: Plugin = {
  name: "memvirt-release-core-only",
  generateBundle(_options, bundle) {
    for (const name of Object.keys(bundle)) if (/(^|\/)debug-[\w-]+\.wasm$/.test(name)) delete bundle[name];
  },
};

export default defineConfig({
  root,
  base: "./",
  logLevel: "warn",
  resolve: { alias: { memvirt: entry } },
  worker: { format: "es", plugins: () => [releaseCoreOnly] },
  plugins: [releaseCoreOnly],
  build: {
    outDir: process.env.MEMVIRT_WEB_OUT ?? "dist",
    emptyOutDir: true,
    target: "es2022",
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
});
