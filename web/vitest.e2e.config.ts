import { defineConfig } from "vitest/config";

// End-to-end tests drive Debian's Chromium with playwright-core; one browser, files in sequence.
export default defineConfig({
  test: {
    include: ["e2e/**/*.e2e.ts"],
    environment: "node",
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
