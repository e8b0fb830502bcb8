/** Starts one real pgpulse server for the whole run and stops it at the end. */

import type { TestProject } from "vitest/node";

import { removeDataDir, startServer } from "./support/server.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** The shared server's base URL. */
    pgpulseUrl: string;
    /** Its data directory, where a `pgpulse worker` finds its embedded PostgreSQL. */
    pgpulseDataDir: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startServer();
  project.provide("pgpulseUrl", server.url);
  project.provide("pgpulseDataDir", server.dataDir);
  return async () => {
    await server.stop();
    await removeDataDir(server.dataDir);
  };
}
