/**
 * A real pgpulse server for tests: `pgpulse serve` from PATH, on a free
 * loopback port, with a fresh data directory (so its own embedded
 * PostgreSQL) unless PGPULSE_TEST_DATABASE_URL names a database to use.
 * `pgpulse worker` runs its jobs, on the same database.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { TEST_JWT_SECRET } from "./token.js";

const READY_DEADLINE_MS = 90_000; // an embedded PostgreSQL's first start takes 5-10 s, more on a busy machine
const READY_POLL_MS = 200;
const STOP_GRACE_MS = 15_000; // SIGTERM: close sockets with 1012, stop the embedded PostgreSQL
const LOG_TAIL_CHARS = 4_000;
const WORKER_READY_DEADLINE_MS = 60_000;
// What `pgpulse worker` logs once its database pool is open and it is claiming jobs.
const WORKER_READY_LINE = /worker \S+: kinds .*, concurrency \d+/;

export interface ServerOptions {
  /** Default: a free port. A restart passes the previous one. */
  readonly port?: number;
  /** Default: a fresh temporary directory. A restart passes the previous one, keeping the database. */
  readonly dataDir?: string;
  /** PGPULSE_ALLOWED_ORIGINS: the origins whose pages may call the HTTP API. */
  readonly allowedOrigins?: readonly string[];
  /** `--workers N`: serving processes. Default 1. */
  readonly workers?: number;
}

export interface RunningServer {
  /** e.g. `http://127.0.0.1:41234` */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly pid: number;
  /** SIGTERM, then SIGKILL to its process group after a grace period. Resolves once it has exited. */
  stop(): Promise<void>;
  /** The last lines it printed, for failure messages. */
  log(): string;
}

export interface RunningWorker {
  readonly pid: number;
  /** SIGTERM (it finishes or gives back the jobs in hand), then SIGKILL after a grace period. Resolves once it has exited. */
  stop(): Promise<void>;
  log(): string;
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const port = options.port ?? (await freePort());
  const dataDir = options.dataDir ?? (await openTempDir());
  const args = ["serve", "--host", "127.0.0.1", "--port", String(port)];
  if (options.workers !== undefined) args.push("--workers", String(options.workers));
  const child = await launch(args, dataDir, {
    PGPULSE_ALLOWED_ORIGINS: (options.allowedOrigins ?? []).join(","),
  });
  const url = `http://127.0.0.1:${port}`;
  const server: RunningServer = { url, port, dataDir, pid: child.pid, stop: child.stop, log: child.log };
  try {
    await waitReady(url, child.process);
  } catch (error) {
    await server.stop();
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n--- pgpulse output ---\n${child.log()}`);
  }
  return server;
}

/**
 * `pgpulse worker` with its built-in kinds (`echo`, `sleep`), on the database
 * of the server that uses `dataDir`: PGPULSE_TEST_DATABASE_URL when set, else
 * that server's embedded PostgreSQL, which it joins. Start it after the
 * server and stop it before.
 */
export async function startWorker(dataDir: string): Promise<RunningWorker> {
  const child = await launch(["worker"], dataDir, {});
  const worker: RunningWorker = { pid: child.pid, stop: child.stop, log: child.log };
  try {
    await waitForOutput(child, WORKER_READY_LINE, WORKER_READY_DEADLINE_MS);
  } catch (error) {
    await worker.stop();
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n--- pgpulse worker output ---\n${child.log()}`);
  }
  return worker;
}

export interface Launched {
  readonly process: ChildProcess;
  readonly pid: number;
  stop(): Promise<void>;
  log(): string;
  /** Calls `listener` after every chunk it prints; returns a function that stops that. */
  onOutput(listener: () => void): () => void;
}

/**
 * Start `command` (default `pgpulse`) with the test secret, `dataDir`, and
 * PGPULSE_TEST_DATABASE_URL as its database when set (else none, so an
 * embedded PostgreSQL in `dataDir`, whatever the developer's shell exports).
 */
export async function launch(
  args: readonly string[],
  dataDir: string,
  extraEnv: NodeJS.ProcessEnv,
  options: { readonly command?: string; readonly cwd?: string } = {},
): Promise<Launched> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PGPULSE_JWT_SECRET: TEST_JWT_SECRET,
    PGPULSE_DATA_DIR: dataDir,
    ...extraEnv,
  };
  const external = process.env.PGPULSE_TEST_DATABASE_URL;
  if (external !== undefined && external !== "") {
    env.PGPULSE_DATABASE_URL = env.DATABASE_URL = external;
  } else {
    delete env.PGPULSE_DATABASE_URL;
    delete env.DATABASE_URL;
  }

  const command = options.command ?? "pgpulse";
  // Its own process group, so a SIGKILL also reaches an embedded PostgreSQL it started.
  const child = spawn(command, args, {
    env,
    cwd: options.cwd,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const listeners = new Set<() => void>();
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-LOG_TAIL_CHARS);
    for (const listener of [...listeners]) listener();
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const spawned = new Promise<void>((resolve, reject) => {
    child.once("spawn", () => resolve());
    child.once("error", (error) =>
      reject(new Error(`cannot start ${command} (is the project's virtualenv active?): ${error.message}`)),
    );
  });
  await spawned;
  const pid = child.pid;
  if (pid === undefined) throw new Error("pgpulse started without a pid");
  return {
    process: child,
    pid,
    stop: () => stopProcess(child, pid, exited),
    log: () => output,
    onOutput: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** Remove a data directory a server made, once it is stopped. */
export async function removeDataDir(dataDir: string): Promise<void> {
  await rm(dataDir, { recursive: true, force: true });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      probe.close(() => (port > 0 ? resolve(port) : reject(new Error("no free port"))));
    });
  });
}

/** Resolves once `GET url+path` answers 200; rejects if the process exits first or time runs out. */
export async function waitReady(url: string, child: ChildProcess, path = "/readyz"): Promise<void> {
  const deadline = Date.now() + READY_DEADLINE_MS;
  let last = "no answer yet";
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${child.spawnfile} exited before it was ready (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    try {
      const response = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) return;
      last = `GET ${path} answered ${response.status}`;
    } catch (error) {
      last = error instanceof Error ? error.message : String(error);
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  throw new Error(`${child.spawnfile} at ${url} not ready after ${READY_DEADLINE_MS / 1000} s: ${last}`);
}

/** Resolves once the process has printed a line matching `pattern`; rejects if it exits first or time runs out. */
function waitForOutput(child: Launched, pattern: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let done = false;
    const finish = (error?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stopListening();
      child.process.off("exit", onExit);
      if (error === undefined) resolve();
      else reject(error);
    };
    const check = (): void => {
      if (pattern.test(child.log())) finish();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      finish(new Error(`pgpulse ${child.process.spawnargs[1] ?? ""} exited before it was ready (code ${code}, signal ${signal})`));
    const stopListening = child.onOutput(check);
    child.process.once("exit", onExit);
    timer = setTimeout(() => finish(new Error(`no line matching ${pattern} after ${timeoutMs / 1000} s`)), timeoutMs);
    check();
    if (child.process.exitCode !== null || child.process.signalCode !== null) {
      onExit(child.process.exitCode, child.process.signalCode);
    }
  });
}

async function stopProcess(child: ChildProcess, pid: number, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const graceOver = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), STOP_GRACE_MS);
  });
  const outcome = await Promise.race([exited.then(() => "exited" as const), graceOver]);
  clearTimeout(timer);
  if (outcome === "timeout") {
    try {
      process.kill(-pid, "SIGKILL"); // the group this test started: the server and its PostgreSQL
    } catch {
      // Already gone.
    }
    await exited;
  }
}

/**
 * A fresh data directory that other users may list: run as root, the embedded
 * PostgreSQL runs as another user and refuses a data directory under a private
 * folder (mkdtemp makes them 0700) rather than open it to everyone.
 */
export async function openTempDir(prefix = "pgpulse-web-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o755);
  return dir;
}
