/**
 * The page writes every string into the DOM as text (ui/dom.ts builds elements,
 * strings become Text nodes). This keeps it so: neither the sources nor the
 * committed bundle (which includes the libraries) use an API that parses a
 * string as HTML or code.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SINKS = /\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|srcdoc|createContextualFragment|DOMParser|eval\s*\(|new Function\s*\()/;

function files(dir: string, ext: RegExp): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path, ext) : ext.test(name) ? [path] : [];
  });
}

describe("HTML and code sinks", () => {
  it("are used nowhere in the sources", () => {
    const src = fileURLToPath(new URL("../src", import.meta.url));
    const found = files(src, /\.ts$/).filter((f) => SINKS.test(readFileSync(f, "utf8")));
    expect(found).toEqual([]);
  });

  it("are used nowhere in the built bundle", () => {
    const dist = fileURLToPath(new URL("../dist", import.meta.url));
    const bundle = files(dist, /\.js$/);
    expect(bundle.length).toBeGreaterThan(0);
    expect(bundle.filter((f) => SINKS.test(readFileSync(f, "utf8")))).toEqual([]);
  });
});
