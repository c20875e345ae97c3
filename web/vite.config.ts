import { defineConfig, type Plugin } from "vitest/config";

/**
 * The built page may load nothing but its own files and talk to nothing but its own
 * server, and no string may reach a sink that parses HTML or script. The server sends
 * the same policy as a header with frame-ancestors, which a <meta> cannot carry.
 * Only in builds: the dev server injects styles inline, which this forbids.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join("; ");

const contentSecurityPolicy: Plugin = {
  name: "carrier-csp",
  apply: "build",
  transformIndexHtml: () => [{ tag: "meta", attrs: { "http-equiv": "Content-Security-Policy", content: CSP }, injectTo: "head-prepend" }],
};

// `npm run build` must give byte-identical output for identical sources, because
// the server embeds dist/ and CI rebuilds it to compare. Hence: no timestamps or
// absolute paths in the output, content-hashed names, and one fixed target.
export default defineConfig(({ mode }) => ({
  base: "./",
  plugins: [contentSecurityPolicy],
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
    // Key derivation in the safety number takes seconds on a loaded machine.
    testTimeout: 30_000,
    environment: "node",
  },
}));
