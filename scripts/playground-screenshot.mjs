#!/usr/bin/env node
// Takes the README's screenshot of the playground (docs/playground.png): the Walk view of a cold 4+4
// EPT walk, stepped to its 13th reference, in a 1280x800 window of headless Chromium (the walk's part of the page). Needs the built
// site (npm run web:build) and Debian's chromium. Usage: node scripts/playground-screenshot.mjs [OUT.png]
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = process.argv[2] ?? `${root}docs/playground.png`;
const server = spawn(process.execPath, [`${root}bin/memvirt.js`, "web", "--port", "0"], {
  stdio: ["ignore", "pipe", "inherit"],
});
const origin = await new Promise((done) =>
  server.stdout.on("data", (chunk) => {
    const url = /http:\/\/\S+/.exec(String(chunk));
    if (url) done(url[0]);
  }),
);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const query = new URLSearchParams({
    config: JSON.stringify({ mode: "ept", nestedPsc: false }),
    workload: "zipf",
    records: "100000",
    footprint: "64M",
    view: "walk",
    run: "1",
  });
  await page.goto(`${origin}?${query}`);
  await page.waitForFunction(() => document.body.dataset.state === "done", undefined, { timeout: 60_000 });
  await page.getByRole("button", { name: "Before the first reference" }).click();
  for (let i = 0; i < 13; i++) await page.getByRole("button", { name: "Next reference" }).click();
  // From the walk's heading down to the bottom of its grid.
  const top = await page.locator("#walk h2").boundingBox();
  const grid = await page.locator("#walk .walk-grid").boundingBox();
  await page.screenshot({
    path: out,
    fullPage: true,
    clip: { x: 0, y: top.y - 12, width: 1200, height: grid.y + grid.height - top.y + 24 },
  });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  server.kill();
}
