// The CLI's promises for bad input (issue 16): every mistake a user can make is a one-line message that
// names the file, key, flag or byte, exit code 2, the statistics so far, and no stack trace; and
// nothing is lost (no half-written file, no temporary left behind). Run in this process (test/cli/in-process.ts).
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { deflateSync, gzipSync, inflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { readCheckpoint } from "../../src/runner/checkpoint.js";
import { runMemvirt as run, scratch } from "./in-process.js";

const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const { dir, config } = scratch("memvirt-promises-");

/** A user error: exit 2, one line on stderr naming what `pattern` says, no stack trace. */
function expectUserError(result: { code: number; stderr: string }, pattern: RegExp): void {
  expect(result.code).toBe(2);
  expect(result.stderr).toMatch(/^memvirt: [^\n]*\n$/);
  expect(result.stderr).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

describe("checkpoints know their trace", () => {
  const checkpoint = join(dir, "din.ckpt");
  const shorter = join(dir, "shorter.din");
  writeFileSync(shorter, readFileSync(fixture("ls.din"), "utf8").split("\n").slice(0, 1000).join("\n"));

  it("--resume on another trace is refused with exit 2 naming both, unless --force-trace", async () => {
    const first = await run([
      "run",
      "--trace",
      fixture("ls.din"),
      "--checkpoint",
      checkpoint,
      "--checkpoint-every",
      "20000",
      "--json",
    ]);
    expect(first.code).toBe(0);
    expect(readCheckpoint(checkpoint).run.traceIdentities?.[0].size).toBe(statSync(fixture("ls.din")).size);
    const other = await run(["run", "--resume", checkpoint, "--trace", shorter, "--json"]);
    expectUserError(
      other,
      new RegExp(
        `${shorter}: not the trace checkpoint ${checkpoint} was taken on \\(it has \\d+ bytes, the checkpoint's trace had 560612\\); .*--force-trace`,
      ),
    );
    expect(other.output).toBe("");
  });

  it("a resume position past the end of the trace is an error (exit 2) with the statistics of the checkpoint", async () => {
    const forced = await run(["run", "--resume", checkpoint, "--trace", shorter, "--force-trace", "--json"]);
    expectUserError(
      forced,
      /shorter\.din: byte \d+: the trace ends before the checkpoint's position \(decoded byte \d+\)/,
    );
    const report = JSON.parse(forced.output);
    expect(report.accesses).toBe(40000);
    expect(report.error).toMatch(/ends before the checkpoint's position/);
  });

  it("a checkpoint whose checksum holds but whose header disagrees with itself is exit 2, naming the file and what", async () => {
    const file = readFileSync(checkpoint);
    const payload = inflateSync(file.subarray(8));
    const length = payload.readUInt32LE(0);
    const header = JSON.parse(payload.subarray(4, 4 + length).toString("utf8"));
    const rewrite = (name: string, change: (h: typeof header) => void) => {
      const edited = structuredClone(header);
      change(edited);
      const text = Buffer.from(JSON.stringify(edited));
      const size = Buffer.alloc(4);
      size.writeUInt32LE(text.length);
      const path = join(dir, name);
      writeFileSync(
        path,
        Buffer.concat([
          file.subarray(0, 8),
          deflateSync(Buffer.concat([size, text, payload.subarray(4 + length)])),
        ]),
      );
      return path;
    };
    const extraPage = rewrite("pages.ckpt", (h) => h.core.pages.push(h.core.memoryPages - 1));
    expectUserError(
      await run(["run", "--resume", extraPage]),
      new RegExp(
        `${extraPage}: inconsistent checkpoint: \\d+ bytes of state where its header describes \\d+`,
      ),
    );
    const badKey = rewrite("config.ckpt", (h) => {
      h.run.config.guest.levels = 7;
    });
    expectUserError(
      await run(["run", "--resume", badKey]),
      /config\.ckpt: inconsistent checkpoint: run\.config: config key "guest\.levels": must be one of 4, 5, got 7/,
    );
    const noPosition = rewrite("position.ckpt", (h) => {
      h.position = null;
    });
    expectUserError(
      await run(["run", "--resume", noPosition]),
      /position\.ckpt: inconsistent checkpoint: no trace position/,
    );
  });

  it("--config, --preset, --format and workload options do not apply to --resume", async () => {
    const configFile = config("any.json", {});
    for (const args of [
      ["--config", configFile],
      ["--preset", "zen4"],
      ["--format", "din"],
      ["--records", "5"],
      ["--seed", "3"],
    ])
      expectUserError(
        await run(["run", "--resume", checkpoint, ...args]),
        new RegExp(
          `^memvirt: ${args[0]}: does not apply to --resume \\(the checkpoint holds the run's config, workload and format\\)`,
        ),
      );
  });
});

describe("inputs are checked where they enter", () => {
  it("--footprint 0 and 4097 are exit 2 naming the flag, not a stack trace", async () => {
    expectUserError(
      await run(["run", "--workload", "zipf", "--footprint", "0"]),
      /--footprint: must be at least 8 bytes/,
    );
    expectUserError(
      await run(["run", "--workload", "uniform", "--footprint", "4097"]),
      /--footprint: 4097 bytes is not a whole number of 8-byte accesses/,
    );
    expectUserError(
      await run(["run", "--workload", "pointer-chase", "--footprint", "4104"]),
      /--footprint: 4104 bytes is not a whole number of 64-byte lines/,
    );
    expectUserError(
      await run(["run", "--workload", "zipf", "--footprint", "lots"]),
      /--footprint: must be a byte size/,
    );
  });

  it("--footprint 1024T is beyond the guest's user address space: exit 2, not accesses counted as #GP", async () => {
    expectUserError(
      await run(["run", "--workload", "zipf", "--footprint", "1024T", "--records", "1000"]),
      /--footprint: 1 PiB does not fit the guest's user address space \(.* with 4-level paging; "guest": \{"levels": 5\} gives 64 PiB\)/,
    );
    // Within it, 5-level paging takes the same footprint.
    const five = config("la57.json", { guest: { levels: 5 } });
    const ok = await run([
      "run",
      "--config",
      five,
      "--workload",
      "uniform",
      "--footprint",
      "1024T",
      "--records",
      "2000",
      "--json",
    ]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.output).faults.gp).toBe(0);
  });

  it("integers where integers are meant: --records 1.5 and --vms 2.5 are exit 2", async () => {
    expectUserError(
      await run(["run", "--workload", "zipf", "--records", "1.5"]),
      /--records: must be a whole number, got "1\.5"/,
    );
    expectUserError(
      await run(["run", "--workload", "identical-vms", "--vms", "2.5"]),
      /--vms: must be a whole number/,
    );
    expectUserError(
      await run(["run", "--workload", "dma-nic", "--records", "1e-3"]),
      /--records: must be a number from 1/,
    );
    expectUserError(
      await run(["compare", "--workload", "zipf", "--records", "7.25"]),
      /--records: must be a whole number/,
    );
  });

  it("an option that does not apply to the chosen source is refused, naming it and what it applies to", async () => {
    const lk = fixture("ls-head.lk");
    expectUserError(
      await run(["run", "--trace", lk, "--vms", "2"]),
      /--vms: a trace run has one VM per --trace; give --trace once for each VM/,
    );
    expectUserError(
      await run(["run", "--trace", lk, "--footprint", "1G"]),
      /--footprint: does not apply to a trace run; it applies to a synthetic workload/,
    );
    expectUserError(
      await run(["run", "--workload", "zipf", "--format", "din"]),
      /--format: does not apply to a synthetic workload \(--workload zipf\); it applies to a trace run/,
    );
    expectUserError(
      await run(["run", "--workload", "dma-nic", "--footprint", "1M"]),
      /--footprint: does not apply to a DMA workload \(--workload dma-nic\)/,
    );
    expectUserError(
      await run(["run", "--workload", "zipf", "--seconds", "3"]),
      /--seconds: does not apply to a synthetic workload .*it applies to a multi-VM workload, a run of several traces/,
    );
    expectUserError(
      await run(["compare", "--workload", "dma-nvme", "--zipf", "0.5"]),
      /--zipf: does not apply to --workload dma-nvme/,
    );
    expectUserError(
      await run(["compare", "--seed-table", "--records", "5"]),
      /--records: does not apply to --seed-table/,
    );
  });

  it("a lackey size of 99999999999 is bad input: exit 2 naming the file, line and the size rule", async () => {
    const path = join(dir, "huge-size.lk");
    writeFileSync(path, " L 1000,8\n S 2000,99999999999\n");
    const result = await run(["run", "--trace", path, "--format", "lackey", "--json"]);
    expectUserError(result, /huge-size\.lk:2: bad size \(an access is 0 to 4096 bytes\)/);
    expect(JSON.parse(result.output).accesses).toBe(1);
    // Detected from the content, the reason is still given.
    const sniffed = await run(["run", "--trace", path]);
    expectUserError(
      sniffed,
      /huge-size\.lk:2: cannot tell the trace format from the content \(read as lackey, line 2 is wrong: bad size/,
    );
  });

  it('an empty trace is an error: "no records", exit 2, in every way it can be empty', async () => {
    const empty = join(dir, "empty.lk");
    writeFileSync(empty, "");
    const comments = join(dir, "comments.lk");
    writeFileSync(comments, "==123== Lackey, an example Valgrind tool\n==123== \n");
    const gz = join(dir, "empty.lk.gz");
    writeFileSync(gz, gzipSync(Buffer.alloc(0)));
    for (const path of [empty, comments, gz]) {
      const result = await run(["run", "--trace", path, "--json"]);
      expectUserError(result, new RegExp(`${path}: no records`));
      expect(JSON.parse(result.output).accesses).toBe(0);
    }
    expectUserError(await run(["convert", empty, "--out", join(dir, "empty.mvt")]), /empty\.lk: no records/);
    expect(existsSync(join(dir, "empty.mvt"))).toBe(false);
    expect(existsSync(join(dir, "empty.mvt.tmp"))).toBe(false);
  });

  it("a corrupt gzip or xz trace names the compressed byte where decoding failed, not the file's length", async () => {
    const xz = readFileSync(new URL("../../examples/ls.lk.xz", import.meta.url));
    const damaged = Buffer.from(xz);
    for (let i = 30000; i < 30004; i++) damaged[i] ^= 0xff;
    const xzPath = join(dir, "damaged.lk.xz");
    writeFileSync(xzPath, damaged);
    const xzResult = await run(["run", "--trace", xzPath, "--json"]);
    expectUserError(xzResult, /damaged\.lk\.xz: byte (\d+) of the xz file: corrupt xz data/);
    const xzByte = Number(/byte (\d+)/.exec(xzResult.stderr)?.[1]);
    expect(xzByte).toBeGreaterThan(20000);
    expect(xzByte).toBeLessThanOrEqual(30004);
    expect(JSON.parse(xzResult.output).accesses).toBeGreaterThan(0);

    const gz = gzipSync(readFileSync(fixture("ls.lk")));
    const cut = join(dir, "cut.lk.gz");
    writeFileSync(cut, gz.subarray(0, 60000));
    const cutResult = await run(["run", "--trace", cut]);
    expectUserError(cutResult, /cut\.lk\.gz: byte (\d+) of the gzip file: truncated gzip data/);
    expect(Number(/byte (\d+)/.exec(cutResult.stderr)?.[1])).toBeLessThanOrEqual(60000);
    const broken = Buffer.from(gz);
    broken[100000] ^= 0xff;
    broken[100001] ^= 0xff;
    const brokenPath = join(dir, "broken.lk.gz");
    writeFileSync(brokenPath, broken);
    const brokenResult = await run(["run", "--trace", brokenPath]);
    expect(brokenResult.code).toBe(2);
    const at = /byte (\d+) of the gzip file/.exec(brokenResult.stderr);
    // The damage may also decode into a line the parser refuses first; when gzip reports it, it names
    // where the inflate step that failed began: before the damage, far from the file's end.
    if (at) expect(Number(at[1])).toBeLessThanOrEqual(100000);
  });
});

describe("nothing lost: outputs are checked before any work", () => {
  it("convert --out to a directory or an unwritable path is exit 2 and leaves no OUT.tmp", async () => {
    const folder = join(dir, "a-folder");
    mkdirSync(folder);
    expectUserError(
      await run(["convert", fixture("ls-head.lk"), "--out", folder]),
      new RegExp(`--out ${folder}: cannot write: it is a directory`),
    );
    expect(existsSync(`${folder}.tmp`)).toBe(false);
    expectUserError(
      await run(["convert", fixture("ls-head.lk"), "--out", join(dir, "no/such/dir/x.mvt")]),
      /--out .*no\/such\/dir\/x\.mvt: cannot write: ENOENT/,
    );
  });

  it("run --timeline, --report and --checkpoint that cannot be written are exit 2 before the run", async () => {
    const cases: [string[], RegExp][] = [
      [
        [
          "--workload",
          "identical-vms",
          "--vms",
          "2",
          "--pages-per-vm",
          "64",
          "--timeline",
          join(dir, "nope/t.csv"),
        ],
        /--timeline .*nope\/t\.csv: cannot write: ENOENT/,
      ],
      [
        ["--workload", "zipf", "--records", "100", "--report", dir],
        /--report .*: cannot write: it is a directory/,
      ],
      [
        ["--trace", fixture("ls-head.lk"), "--checkpoint", dir, "--checkpoint-every", "10"],
        /--checkpoint .*: cannot write: it is a directory/,
      ],
    ];
    for (const [args, pattern] of cases) {
      const result = await run(["run", ...args, "--json"]);
      expectUserError(result, pattern);
      expect(result.output).toBe("");
    }
  });

  it("sweep --out a directory is exit 2 before any cell runs", async () => {
    const grid = config("grid.json", { configs: { native: {} }, traces: [fixture("ls-head.lk")] });
    expectUserError(await run(["sweep", grid, "--out", dir]), /--out .*: cannot write: EISDIR/);
  });

  it("the frame directory running full is exit 2 with the statistics so far and the key to raise", async () => {
    const small = config("small-directory.json", { memory: { backedFramesLog2: 8 } });
    const result = await run([
      "run",
      "--config",
      small,
      "--workload",
      "uniform",
      "--footprint",
      "1G",
      "--records",
      "100000",
      "--json",
    ]);
    expectUserError(result, /physical-memory directory full \(raise memory\.backedFramesLog2\)/);
    const report = JSON.parse(result.output);
    expect(report.accesses).toBeGreaterThan(0);
    expect(report.error).toMatch(/directory full/);
    expect(report.config.memory.backedFramesLog2).toBe(8);
  });
});

describe("an internal error is one line with the version asking for a bug report, exit 70, and the statistics so far", () => {
  it("a bug in a guest kernel handler mid-run", async () => {
    // Under EPT: on bare metal the core pages VMAs in on demand itself and the handler is not called.
    const ept = config("ept.json", { mode: "ept" });
    const { GuestOS } = await import("../../src/guest/os.js");
    const original = GuestOS.prototype.pageFault;
    let faults = 0;
    GuestOS.prototype.pageFault = function (this: InstanceType<typeof GuestOS>, ...args) {
      if (++faults === 50) throw new TypeError("cannot read properties of undefined (reading 'pte')");
      return original.apply(this, args);
    };
    try {
      const result = await run([
        "run",
        "--config",
        ept,
        "--workload",
        "uniform",
        "--records",
        "20000",
        "--footprint",
        "64M",
        "--json",
      ]);
      expect(result.code).toBe(70);
      expect(result.stderr).toMatch(
        /^memvirt 0\.1\.0: internal error: TypeError: cannot read properties of undefined \(reading 'pte'\)\. This is a bug in memvirt: please report it/,
      );
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      const report = JSON.parse(result.output);
      expect(report.error).toBe(
        "internal error: TypeError: cannot read properties of undefined (reading 'pte')",
      );
      expect(report.guestOs.minorFaults).toBe(49);
    } finally {
      GuestOS.prototype.pageFault = original;
    }
  });
});

describe("reports and CSV work for every workload family", () => {
  const multiVm = ["--workload", "cloud-mix", "--vms", "2", "--pages-per-vm", "256", "--records", "20000"];

  it("--csv of a multi-VM run prints a header and one row holding the JSON report's values", async () => {
    const json = JSON.parse((await run(["run", ...multiVm, "--json"])).output);
    const result = await run(["run", ...multiVm, "--csv"]);
    expect(result.code).toBe(0);
    const [header, row, ...rest] = result.output.trim().split("\n");
    expect(rest).toEqual([]);
    const cells = Object.fromEntries(header.split(",").map((key, i) => [key, row.split(",")[i]]));
    expect(cells["source.kind"]).toBe("workload");
    expect(Number(cells.accesses)).toBe(json.accesses);
    expect(Number(cells.cycles)).toBe(json.cycles);
  });

  it("--report of a multi-VM run writes its page, with the effective config", async () => {
    const page = join(dir, "multi-vm.html");
    const result = await run(["run", ...multiVm, "--report", page]);
    expect(result.code).toBe(0);
    const html = readFileSync(page, "utf8");
    expect(html).toMatch(/^<!doctype html>/i);
    expect(html).toContain("<svg");
    expect(html).toMatch(/&#34;overcommit&#34;|"overcommit"/);
  });

  it("compare --workload dma-nvme writes --csv (a row per IOMMU mode) and --report (with a chart)", async () => {
    const csv = await run(["compare", "--workload", "dma-nvme", "--records", "200", "--csv"]);
    expect(csv.code).toBe(0);
    const [header, ...rows] = csv.output.trim().split("\n");
    expect(header.split(",").slice(0, 3)).toEqual(["mode", "kind", "translations"]);
    expect(rows.map((row) => row.split(",")[0])).toContain("strict");
    const page = join(dir, "compare-dma.html");
    const result = await run(["compare", "--workload", "dma-nvme", "--records", "200", "--report", page]);
    expect(result.code).toBe(0);
    expect(readFileSync(page, "utf8")).toContain("<svg");
  });

  it("run --workload dma-nvme --report has the IOMMU section and translations, not an all-zero page", async () => {
    const page = join(dir, "dma-nvme.html");
    const json = JSON.parse(
      (await run(["run", "--workload", "dma-nvme", "--records", "200", "--json"])).output,
    );
    expect(json.iommu.translations).toBeGreaterThan(0);
    const result = await run(["run", "--workload", "dma-nvme", "--records", "200", "--report", page]);
    expect(result.code).toBe(0);
    const html = readFileSync(page, "utf8");
    expect(html).toContain("IOMMU hit rates");
    expect(html).toContain("IOMMU: vtd, strict");
  });
});
