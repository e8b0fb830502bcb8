/**
 * The page of the FastAPI example (`examples/fastapi_app/page/`), built with
 * this package's tools into `examples/fastapi_app/page/dist/`, which the
 * example app serves. It imports `@pgpulse/client` as an app would; here the
 * name points at this package's sources, and React at this package's copy,
 * since the example folder has no node_modules of its own.
 */

import { fileURLToPath } from "node:url";

import { defineConfig } from "vite";

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

export const EXAMPLE_PAGE = here("../../examples/fastapi_app/page");

export default defineConfig({
  root: EXAMPLE_PAGE,
  base: "./",
  resolve: {
    alias: [
      { find: /^@pgpulse\/client$/, replacement: here("src/index.ts") },
      { find: /^@pgpulse\/client\/react$/, replacement: here("src/react.ts") },
      { find: /^@pgpulse\/client\/notification-center$/, replacement: here("src/NotificationCenter.tsx") },
      { find: /^(react|react-dom)(\/.*)?$/, replacement: `${here("node_modules")}/$1$2` },
    ],
  },
  build: {
    outDir: `${EXAMPLE_PAGE}/dist`,
    emptyOutDir: true,
  },
  logLevel: "warn",
});
