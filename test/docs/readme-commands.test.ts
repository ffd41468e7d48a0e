// The README runs as printed (issue 16): every shell block's commands run, in order, in a scratch
// copy of what a fresh clone holds (the repository's tracked examples/, scripts/ and presets/, with
// the build that `npm run build` makes), with `memvirt` being the checkout's bin, as `npx memvirt` is.
// A file a command names that is not in the repository makes it fail. The few commands that need what
// a test machine does not have (other machines, a Redis server on the cluster's address, Slurm, a
// server that runs until stopped) are listed with the reason, and the list must match the README.
// Spawns every command: on the release build only (the commands test the CLI, not the core's build).
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";

const root = new URL("../../", import.meta.url).pathname;
const readme = readFileSync(join(root, "README.md"), "utf8");

/** Commands that do not run here, by how they start, with why; each is covered elsewhere as noted. */
const NOT_RUN: Record<string, string> = {
  "npm install && npm start": "CI's own first steps (npm ci, the build); memvirt demo is in the golden runs",
  "npm test": "CI runs it; this test is part of it",
  "npm run web:build && npx memvirt web": "serves until stopped; test/web runs the playground in Chromium",
  "redis-server --bind 10.0.0.1": "needs the cluster's address; test/cluster runs a real redis-server",
  "memvirt worker --queue redis://10.0.0.1": "needs that Redis server and /shared; test/cluster runs workers",
  "memvirt sweep /shared/grid.json --queue":
    "needs that Redis server and /shared; test/cluster runs queue sweeps",
  "sbatch --wait sweep.sbatch": "needs Slurm; test/cluster runs the emitted script under a real slurmd",
  "memvirt sweep examples/grid.json --merge parts --out rows.jsonl --csv rows.csv":
    "merges what the Slurm jobs wrote; the same merge runs after the shell loop below",
  "memvirt sweep examples/grid.json --emit ranges --cells-per-task 4 |\n  parallel -S node1,node2":
    "GNU parallel over two other machines; the shell loop after it runs the same ranges here",
  "python3 -m http.server": "serves until stopped; test/package runs the browser bundle in Chromium",
};

interface Block {
  line: number;
  /** Commands: a line, with the lines a trailing `\` or `|` continues, and a whole `for` loop. */
  commands: string[];
}

function shellBlocks(text: string): Block[] {
  const blocks: Block[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== "```sh") continue;
    const block: Block = { line: i + 2, commands: [] };
    let open = "";
    for (i++; lines[i] !== "```"; i++) {
      const line = lines[i];
      open = open ? `${open}\n${line}` : line;
      const continues = /[\\|]\s*$/.test(line) || (/^for /.test(open) && !/^done\b/.test(line));
      if (!continues) {
        block.commands.push(open);
        open = "";
      }
    }
    blocks.push(block);
  }
  return blocks;
}

const reasonFor = (command: string) => Object.entries(NOT_RUN).find(([start]) => command.startsWith(start));

/** A scratch copy of a fresh clone after `npm ci && npm run build`, and a `memvirt` on PATH. */
function freshClone(): { dir: string; path: string } {
  const dir = mkdtempSync(join(tmpdir(), "memvirt-readme-"));
  const tracked = spawnSync("git", ["ls-files", "-z", "examples", "scripts", "presets"], { cwd: root });
  expect(tracked.status).toBe(0);
  for (const file of tracked.stdout.toString().split("\0").filter(Boolean)) {
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    copyFileSync(join(root, file), join(dir, file));
  }
  for (const made of ["package.json", "bin", "dist", "build", "node_modules"])
    symlinkSync(join(root, made), join(dir, made));
  const bin = join(dir, ".memvirt-bin");
  mkdirSync(bin);
  writeFileSync(
    join(bin, "memvirt"),
    `#!/bin/sh\nexec "${process.execPath}" "${join(root, "bin/memvirt.js")}" "$@"\n`,
  );
  chmodSync(join(bin, "memvirt"), 0o755);
  return { dir, path: `${bin}:${dirname(process.execPath)}:${process.env.PATH ?? ""}` };
}

const blocks = shellBlocks(readme);

describe("the README's commands", () => {
  it("every command that does not run here is one the README prints, with its reason", () => {
    const commands = blocks.flatMap((block) => block.commands);
    for (const start of Object.keys(NOT_RUN))
      expect(
        commands.some((command) => command.startsWith(start)),
        start,
      ).toBe(true);
    // The README shows memvirt, npm and npx commands, and they are what this test runs.
    expect(commands.filter((command) => /^(memvirt|npx memvirt|npm) /.test(command)).length).toBeGreaterThan(
      15,
    );
  });

  it.skipIf(process.env.MEMVIRT_BUILD === "debug")(
    "run as printed from a fresh clone: exit 0, no stack trace, every file they name shipped",
    async () => {
      const runnable = blocks
        .map((block) => ({ ...block, script: block.commands.filter((c) => !reasonFor(c)).join("\n") }))
        .filter((block) => block.script.trim() !== "");
      // Two blocks at a time, each in a clone of its own (they are independent of each other).
      const results: { block: string; status: number | null; stderr: string }[] = [];
      const next = async (): Promise<void> => {
        const block = runnable.shift();
        if (!block) return;
        const { dir, path } = freshClone();
        const child = spawn("sh", ["-ec", block.script], {
          cwd: dir,
          env: { ...process.env, PATH: path, MEMVIRT_BUILD: undefined },
          stdio: ["ignore", "ignore", "pipe"],
        });
        let stderr = "";
        child.stderr.on("data", (chunk) => {
          stderr += chunk;
        });
        const status = await new Promise<number | null>((resolve) => child.on("close", resolve));
        results.push({ block: `README.md:${block.line}`, status, stderr });
        return next();
      };
      await Promise.all([next(), next()]);
      for (const result of results)
        expect(result).toEqual({
          block: result.block,
          status: 0,
          stderr: expect.not.stringMatching(/\n\s+at |memvirt: /),
        });
    },
  );
});
