// Real servers for the cluster tests: redis-server on a free loopback port, and a single-node Slurm
// cluster (munged, slurmctld, slurmd) under a temporary folder, all as children of the test process,
// in the foreground, so that stopping them is killing them. Nothing is left running after a test,
// whether it passed or not.

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { hostname, totalmem } from "node:os";
import { join } from "node:path";

const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function waitFor(what: string, test: () => boolean | Promise<boolean>, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 50));
  }
}

/** A child process whose stderr and stdout are kept, to wait for lines and read them afterwards. */
export class Child {
  readonly process: ChildProcess;
  output = "";
  readonly exited: Promise<number | null>;

  constructor(command: string, args: string[], options: Parameters<typeof spawn>[2] = {}) {
    this.process = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    this.process.stdout?.on("data", (chunk) => {
      this.output += chunk;
    });
    this.process.stderr?.on("data", (chunk) => {
      this.output += chunk;
    });
    this.exited = new Promise((resolve) => {
      this.process.once("exit", (code) => resolve(code));
      // A command that cannot start has exited, rather than raising an unhandled error event.
      this.process.once("error", (error) => {
        this.output += `${error.message}\n`;
        resolve(null);
      });
    });
  }

  waitForOutput(pattern: RegExp, ms?: number): Promise<void> {
    return waitFor(
      `${pattern} in the output of ${this.process.spawnfile}:\n${this.output}`,
      () => pattern.test(this.output),
      ms,
    );
  }

  /** Kills the process (and waits for its exit) unless it has already exited. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill(signal);
    await this.exited;
  }
}

/** `memvirt ARGS` as a child process. */
export function memvirt(args: string[], env: NodeJS.ProcessEnv = {}): Child {
  return new Child(process.execPath, [cli, ...args], { env: { ...process.env, ...env } });
}

export interface RedisServer {
  port: number;
  tlsPort: number;
  password: string;
  /** The CA that signed the server's certificate, for NODE_EXTRA_CA_CERTS. */
  ca: string;
  stop(): Promise<void>;
}

/** redis-server with a password, on a plain and a TLS port (a self-signed certificate for 127.0.0.1). */
export async function startRedis(dir: string): Promise<RedisServer> {
  const password = "memvirt-test-password";
  const cert = join(dir, "redis-cert.pem");
  const key = join(dir, "redis-key.pem");
  const made = spawnSync("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "1",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
  ]);
  if (made.status !== 0) throw new Error(`openssl: ${made.stderr}`);
  const port = await freePort();
  const tlsPort = await freePort();
  const server = new Child("redis-server", [
    "--port",
    String(port),
    "--tls-port",
    String(tlsPort),
    "--tls-cert-file",
    cert,
    "--tls-key-file",
    key,
    "--tls-auth-clients",
    "no",
    "--bind",
    "127.0.0.1",
    "--requirepass",
    password,
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
  ]);
  try {
    await server.waitForOutput(/Ready to accept connections/, 10_000);
  } catch (error) {
    await server.stop("SIGKILL");
    throw error;
  }
  return { port, tlsPort, password, ca: cert, stop: () => server.stop() };
}

export interface SlurmCluster {
  /** SLURM_CONF for sbatch, sinfo and squeue. */
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

function userIds(name: string): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((entry) => entry.startsWith(`${name}:`));
  if (!line) throw new Error(`no user ${name} (is the package installed?)`);
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

/**
 * A single-node Slurm cluster on this machine, without systemd: munged as the munge user, then
 * slurmctld and slurmd on free ports with a one-node slurm.conf (no cgroups, no accounting), all
 * state under `dir`. Throws saying why when it cannot start (not root, Slurm not installed, ...).
 */
export async function startSlurm(dir: string): Promise<SlurmCluster> {
  if (process.getuid?.() !== 0) throw new Error("the daemons need root");
  for (const program of ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd"]) {
    if (!existsSync(program)) throw new Error(`${program} is not installed`);
  }
  const host = hostname().split(".")[0];
  if (spawnSync("getent", ["hosts", host]).status !== 0)
    throw new Error(`host name ${host} does not resolve`);
  const munge = userIds("munge");
  const slurm = userIds("slurm");
  chmodSync(dir, 0o755);
  const mungeDir = join(dir, "munge");
  const state = join(dir, "state");
  const spool = join(dir, "spool");
  for (const folder of [mungeDir, state, spool]) mkdirSync(folder, { recursive: true });
  chownSync(mungeDir, munge.uid, munge.gid);
  chownSync(state, slurm.uid, slurm.gid);
  const socket = join(mungeDir, "munge.socket");
  const children: Child[] = [];
  const stop = async () => {
    // slurmd first (it runs the jobs), munged last (the others authenticate through it).
    for (const child of children.reverse()) await child.stop();
  };
  try {
    const mungeDaemon = new Child(
      "/usr/sbin/munged",
      [
        "--foreground",
        `--socket=${socket}`,
        `--pid-file=${join(mungeDir, "munged.pid")}`,
        `--log-file=${join(mungeDir, "munged.log")}`,
        `--seed-file=${join(mungeDir, "munged.seed")}`,
      ],
      { uid: munge.uid, gid: munge.gid },
    );
    children.push(mungeDaemon);
    const mungeLog = join(mungeDir, "munged.log");
    await waitFor(
      "munged's socket",
      () => {
        if (mungeDaemon.process.exitCode !== null) {
          const log = existsSync(mungeLog) ? readFileSync(mungeLog, "utf8") : "";
          throw new Error(`munged exited: ${mungeDaemon.output}${log}`.trim());
        }
        return existsSync(socket);
      },
      10_000,
    );
    const [controllerPort, nodePort] = [await freePort(), await freePort()];
    const megabytes = Math.floor((totalmem() / 2 ** 20) * 0.9);
    const conf = join(dir, "slurm.conf");
    writeFileSync(
      conf,
      [
        "ClusterName=memvirt-test",
        `SlurmctldHost=${host}`,
        `SlurmctldPort=${controllerPort}`,
        `SlurmdPort=${nodePort}`,
        "AuthType=auth/munge",
        "CredType=cred/munge",
        `AuthInfo=socket=${socket}`,
        "SlurmUser=slurm",
        "SlurmdUser=root",
        `StateSaveLocation=${state}`,
        `SlurmdSpoolDir=${spool}`,
        `SlurmctldPidFile=${join(state, "slurmctld.pid")}`,
        `SlurmdPidFile=${join(spool, "slurmd.pid")}`,
        `SlurmctldLogFile=${join(state, "slurmctld.log")}`,
        `SlurmdLogFile=${join(spool, "slurmd.log")}`,
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        // Schedule a submitted batch job at once rather than after the default 3 s.
        "SchedulerParameters=batch_sched_delay=0",
        `NodeName=${host} CPUs=${spawnSync("nproc").stdout.toString().trim()} RealMemory=${megabytes} State=UNKNOWN`,
        `PartitionName=memvirt Nodes=${host} Default=YES MaxTime=INFINITE State=UP`,
        "",
      ].join("\n"),
    );
    const env = { ...process.env, SLURM_CONF: conf };
    children.push(new Child("/usr/sbin/slurmctld", ["-D", "-i"], { env }));
    children.push(new Child("/usr/sbin/slurmd", ["-D"], { env }));
    await waitFor(
      `an idle node (slurmctld: ${children[1].output} slurmd: ${children[2].output})`,
      () => spawnSync("sinfo", ["-h", "-o", "%T"], { env }).stdout?.toString().trim() === "idle",
      20_000,
    );
    return { env, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
