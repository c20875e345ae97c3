/**
 * Byte strings as the protocol writes them: hex for ids and fingerprints, strict
 * base64 for bytes in JSON (docs/PROTOCOL.md §1), and big-endian integers for the
 * binary layouts. Decoders refuse anything the Rust side would refuse, so a value
 * accepted here is accepted there.
 */

export type Bytes = Uint8Array<ArrayBuffer>;

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

export function utf8(text: string): Bytes {
  return encoder.encode(text) as Bytes;
}

/** Decodes UTF-8, throwing on invalid sequences (a forged text must not be "repaired"). */
export function fromUtf8(bytes: Uint8Array): string {
  return strictDecoder.decode(bytes);
}

export function concat(...parts: Uint8Array[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

export function fromHex(hex: string): Bytes {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error("not a hex string");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

export function toBase64(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = [18, 12, 6, 0].map((shift) => BASE64_ALPHABET[(n >> shift) & 63]);
    const kept = Math.min(4, Math.ceil(((bytes.length - i) * 4) / 3));
    out += chars.slice(0, kept).join("") + "=".repeat(4 - kept);
  }
  return out;
}

/**
 * Standard base64 with padding, as the server's decoder takes it: no whitespace,
 * no URL-safe alphabet, and the unused bits of the last character must be zero.
 */
export function fromBase64(text: string): Bytes {
  if (text.length % 4 !== 0) throw new Error("base64 length is not a multiple of 4");
  const pad = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  const body = text.slice(0, text.length - pad);
  const values = Array.from(body, (c) => {
    const v = BASE64_ALPHABET.indexOf(c);
    if (v < 0) throw new Error("invalid base64 character");
    return v;
  });
  const out = new Uint8Array((body.length * 3) >> 2);
  let bits = 0;
  let acc = 0;
  let at = 0;
  for (const v of values) {
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[at++] = (acc >> bits) & 0xff;
    }
  }
  if ((acc & ((1 << bits) - 1)) !== 0) throw new Error("non-zero trailing bits in base64");
  return out;
}

/** Appends big-endian integers and length-prefixed fields, the way every layout is written. */
export class Writer {
  private readonly parts: Uint8Array[] = [];

  bytes(b: Uint8Array): this {
    this.parts.push(b);
    return this;
  }
  u8(n: number): this {
    return this.uint(n, 1);
  }
  u16(n: number): this {
    return this.uint(n, 2);
  }
  u32(n: number): this {
    return this.uint(n, 4);
  }
  u64(n: number | bigint): this {
    const out = new Uint8Array(8);
    new DataView(out.buffer).setBigUint64(0, BigInt(n));
    return this.bytes(out);
  }
  /** A field preceded by its length as a u8 (phones) or u16 (keys, signatures). */
  prefixed(b: Uint8Array, lengthBytes: 1 | 2 | 4): this {
    return this.uint(b.length, lengthBytes).bytes(b);
  }
  finish(): Bytes {
    return concat(...this.parts);
  }

  private uint(n: number, size: 1 | 2 | 4): this {
    if (!Number.isInteger(n) || n < 0 || n >= 2 ** (8 * size)) {
      throw new RangeError(`${n} does not fit in ${size} byte(s)`);
    }
    const out = new Uint8Array(size);
    for (let i = size - 1, v = n; i >= 0; i--, v = Math.floor(v / 256)) out[i] = v & 0xff;
    return this.bytes(out);
  }
}

/** Reads a layout front to back; every read checks the bytes are there. */
export class Reader {
  private at = 0;
  constructor(private readonly data: Uint8Array) {}

  bytes(n: number): Bytes {
    if (this.at + n > this.data.length) throw new Error("truncated");
    const out = this.data.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }
  u8(): number {
    return this.bytes(1)[0];
  }
  u16(): number {
    const b = this.bytes(2);
    return (b[0] << 8) | b[1];
  }
  u32(): number {
    const b = this.bytes(4);
    return new DataView(b.buffer).getUint32(0);
  }
  u64(): bigint {
    return new DataView(this.bytes(8).buffer).getBigUint64(0);
  }
  prefixed(lengthBytes: 1 | 2 | 4): Bytes {
    const n = lengthBytes === 1 ? this.u8() : lengthBytes === 2 ? this.u16() : this.u32();
    return this.bytes(n);
  }
  get offset(): number {
    return this.at;
  }
  end(): void {
    if (this.at !== this.data.length) throw new Error("trailing bytes");
  }
}

export function randomBytes(n: number): Bytes {
  return crypto.getRandomValues(new Uint8Array(n));
}
