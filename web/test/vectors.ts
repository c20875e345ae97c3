/**
 * Loads the repository's shared test vectors (tests/vectors/ at the repository
 * root). CARRIER_VECTORS may name another directory holding newer vector files.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const DIR = process.env.CARRIER_VECTORS ?? fileURLToPath(new URL("../../tests/vectors/", import.meta.url));

export function hasVector(name: string): boolean {
  return existsSync(join(DIR, name));
}

export function loadVector<T = any>(name: string): T {
  return JSON.parse(readFileSync(join(DIR, name), "utf8")) as T;
}
