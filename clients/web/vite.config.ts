/** The library build: one ES module per entry point, React left to the app. */

import { defineConfig } from "vite";

export default defineConfig({
  build: {
    lib: {
      entry: {
        index: "src/index.ts",
        react: "src/react.ts",
        NotificationCenter: "src/NotificationCenter.tsx",
      },
      formats: ["es"],
    },
    rollupOptions: {
      external: ["react", "react/jsx-runtime", "react-dom"],
      output: { chunkFileNames: "chunks/[name]-[hash].js" },
    },
    sourcemap: true,
    emptyOutDir: true,
  },
});
