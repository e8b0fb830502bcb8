import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["e2e/**/*.e2e.test.ts"],
    environment: "node",
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // One file at a time: each starts its own servers, PostgreSQL and Chromium.
    fileParallelism: false,
  },
});
