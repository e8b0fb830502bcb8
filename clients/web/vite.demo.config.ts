/** The demo page: `demo/index.html` built into `dist-demo/`, served by the browser test. */

import { fileURLToPath } from "node:url";

import { defineConfig } from "vite";

export default defineConfig({
  root: fileURLToPath(new URL("demo", import.meta.url)),
  base: "./",
  build: {
    outDir: fileURLToPath(new URL("dist-demo", import.meta.url)),
    emptyOutDir: true,
  },
  logLevel: "warn",
});
