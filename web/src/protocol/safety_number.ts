/**
 * The safety number of two accounts (docs/PROTOCOL.md §17): 60 digits that both
 * people compute from both account keys and compare in person. It changes when
 * either account key changes, never when a device is added.
 */
import { Writer, type Bytes } from "../crypto/bytes";
import { sha512 } from "../crypto/symmetric";

const LABEL = "carrier-v2 safety number\0";
const ITERATIONS = 5200;

/** One side's 30 digits, as six 5-digit groups. */
async function half(phone: string, spki: Bytes): Promise<string[]> {
  const first = new Writer().bytes(new TextEncoder().encode(LABEL) as Bytes).prefixed(new TextEncoder().encode(phone), 1).prefixed(spki, 2).finish();
  let hash = await sha512(first);
  const next = new Uint8Array(64 + spki.length);
  next.set(spki, 64);
  for (let i = 1; i < ITERATIONS; i++) {
    next.set(hash, 0);
    hash = await sha512(next);
  }
  const groups: string[] = [];
  for (let g = 0; g < 6; g++) {
    let value = 0;
    for (const byte of hash.subarray(5 * g, 5 * g + 5)) value = (value * 256 + byte) % 100_000;
    groups.push(String(value).padStart(5, "0"));
  }
  return groups;
}

/** 12 groups of 5 digits separated by spaces; the same whichever side computes it. */
export async function safetyNumber(ownPhone: string, ownSpki: Bytes, peerPhone: string, peerSpki: Bytes): Promise<string> {
  const halves = [await half(ownPhone, ownSpki), await half(peerPhone, peerSpki)].map((h) => h.join(" "));
  return halves.sort().join(" ");
}
