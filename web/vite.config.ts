import { defineConfig } from "vitest/config";

// `npm run build` must give byte-identical output for identical sources, because
// the server embeds dist/ and CI rebuilds it to compare. Hence: no timestamps or
// absolute paths in the output, content-hashed names, and one fixed target.
export default defineConfig(({ mode }) => ({
  base: "./",
  build: {
    target: "es2022",
    outDir: mode === "fake" ? "dist-fake" : "dist",
    emptyOutDir: true,
    sourcemap: false,
    reportCompressedSize: false,
    modulePreload: { polyfill: false },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
}));
