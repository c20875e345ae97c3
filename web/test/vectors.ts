/** Loads the repository's shared test vectors (tests/vectors/ at the repository root). */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export function loadVector<T = any>(name: string): T {
  const path = fileURLToPath(new URL(`../../tests/vectors/${name}`, import.meta.url));
  return JSON.parse(readFileSync(path, "utf8")) as T;
}
