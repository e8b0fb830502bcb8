/** Chromium and built pages for the browser tests: the system's Chromium, never a downloaded one. */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium, type Browser } from "playwright-core";
import { build } from "vite";

import { serveFolder, type StaticServer } from "./staticServer.js";

export const CHROMIUM = process.env.PGPULSE_CHROMIUM ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-sync",
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}

export interface BuiltPage extends StaticServer {
  /** Stops serving and removes the build. */
  dispose(): Promise<void>;
}

/** Builds the page whose `index.html` is in `root` into a folder of its own, and serves it. */
export async function buildAndServe(root: string): Promise<BuiltPage> {
  const outDir = await mkdtemp(join(tmpdir(), "pgpulse-web-page-"));
  await build({ root, base: "./", logLevel: "warn", configFile: false, build: { outDir, emptyOutDir: true } });
  const served = await serveFolder(outDir);
  return {
    origin: served.origin,
    close: served.close,
    dispose: async () => {
      await served.close();
      await rm(outDir, { recursive: true, force: true });
    },
  };
}
