/**
 * The FastAPI example (`examples/fastapi_app`) as a real process:
 * `python -m examples.fastapi_app` from the repository's root, on a free
 * loopback port, with a fresh data directory (its own embedded PostgreSQL)
 * unless PGPULSE_TEST_DATABASE_URL names a database. `python` is the
 * project's virtualenv's (PGPULSE_PYTHON overrides it).
 */

import { fileURLToPath } from "node:url";

import { freePort, launch, waitReady } from "../../test/support/server.js";

const REPOSITORY = fileURLToPath(new URL("../../../../", import.meta.url));

export interface RunningExample {
  /** e.g. `http://127.0.0.1:41234` */
  readonly url: string;
  readonly pid: number;
  /** SIGTERM, then SIGKILL to its process group after a grace period. Resolves once it has exited. */
  stop(): Promise<void>;
  log(): string;
}

export async function startExample(options: { readonly dataDir: string; readonly pageDir: string }): Promise<RunningExample> {
  const port = await freePort();
  const child = await launch(
    ["-m", "examples.fastapi_app", "--host", "127.0.0.1", "--port", String(port), "--page-dir", options.pageDir, "--data-dir", options.dataDir],
    options.dataDir,
    {},
    { command: process.env.PGPULSE_PYTHON ?? "python", cwd: REPOSITORY },
  );
  const url = `http://127.0.0.1:${port}`;
  const example: RunningExample = { url, pid: child.pid, stop: child.stop, log: child.log };
  try {
    await waitReady(url, child.process, "/"); // uvicorn answers once the app's lifespan has started
  } catch (error) {
    await example.stop();
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n--- example output ---\n${child.log()}`);
  }
  return example;
}
