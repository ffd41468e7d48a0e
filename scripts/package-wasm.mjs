// Copies the two Wasm builds beside the compiled JavaScript, to dist/build/. src/core/wasm.ts finds the
// core at `new URL("../../build/<build>.wasm", import.meta.url)`: from src/core/ in a checkout that is
// build/, from dist/src/core/ in the package it is dist/build/, so one literal serves both.
import { copyFileSync, mkdirSync } from "node:fs";

const root = new URL("../", import.meta.url);
mkdirSync(new URL("dist/build/", root), { recursive: true });
for (const build of ["release", "debug"]) {
  copyFileSync(new URL(`build/${build}.wasm`, root), new URL(`dist/build/${build}.wasm`, root));
}
