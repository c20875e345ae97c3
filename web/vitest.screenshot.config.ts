import { defineConfig } from "vitest/config";

// `npm run screenshot`: remakes screenshot.png against a real server and CLI (e2e/screenshot.ts).
export default defineConfig({
  test: {
    include: ["e2e/screenshot.ts"],
    environment: "node",
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
