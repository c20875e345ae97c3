/**
 * What an envelope encrypts (docs/PROTOCOL.md §13): a content type, the sender's
 * clock, the body, and zeros up to a padded size, so a server learns the padded
 * size rather than the exact length. Every payload of up to 256 bytes is padded
 * to 256, so short messages all look alike; longer ones get Padmé's size (Nikitin
 * et al., PETS 2019), which adds less than 1/16 where doubling added up to 100%.
 */
import { fromUtf8, Reader, utf8, Writer, toHex, type Bytes } from "../crypto/bytes";

/** Every payload of up to this many bytes is padded to exactly it. */
export const MIN_PADDED = 256;
/** The largest Padmé size; a payload above it takes MAX_PADDED. */
const LAST_PADME = 65_536;
/** The one size above 64 KiB, which the largest text and its sync copy fit. */
export const MAX_PADDED = 66_048;
export const MAX_TEXT_BYTES = 65_536;
const HEADER = 13;

export type Content =
  | { type: "text"; text: string }
  /** What this account sent to `to` under `id`, for the sender's other devices. */
  | { type: "sync"; to: string; id: string; text: string }
  | { type: "other"; contentType: number; body: Bytes };

export interface Payload {
  content: Content;
  sentAt: number;
}

export class PaddingError extends Error {}

function body(content: Content): [number, Bytes] {
  switch (content.type) {
    case "text":
      return [1, checkedText(content.text)];
    case "sync":
      return [2, new Writer().prefixed(utf8(content.to), 1).bytes(fromHexId(content.id)).bytes(checkedText(content.text)).finish()];
    case "other":
      return [content.contentType, content.body];
  }
}

function checkedText(text: string): Bytes {
  const bytes = utf8(text);
  if (bytes.length > MAX_TEXT_BYTES) throw new PaddingError("a text is at most 65 536 bytes");
  return bytes;
}

function fromHexId(id: string): Bytes {
  if (!/^[0-9a-f]{32}$/i.test(id)) throw new PaddingError("a message id is 32 hex characters");
  return Uint8Array.from(id.match(/../g)!, (b) => parseInt(b, 16));
}

/**
 * Padmé's size for n ≥ 2 bytes: with E = ⌊log₂ n⌋ and S = ⌊log₂ E⌋ + 1, n rounded up
 * to a multiple of 2^(E−S). Called only for n ≤ MAX_PADDED, far below 2^31, where clz32 holds.
 */
function padme(n: number): number {
  const e = 31 - Math.clz32(n);
  const s = 32 - Math.clz32(e);
  const step = 2 ** (e - s);
  return Math.ceil(n / step) * step;
}

/** The padded size of `length` bytes of payload, or undefined when nothing holds it. */
export function paddedSize(length: number): number | undefined {
  if (length <= MIN_PADDED) return MIN_PADDED;
  if (length > MAX_PADDED) return undefined;
  const size = padme(length);
  return size <= LAST_PADME ? size : MAX_PADDED;
}

/** 256, 66 048, or a size from 257 to 65 536 that Padmé leaves as it is (§13 lists them). */
export function isPaddedSize(size: number): boolean {
  return size === MIN_PADDED || size === MAX_PADDED || (size > MIN_PADDED && size <= LAST_PADME && padme(size) === size);
}

/** What a sync copy's body holds beyond its text, at most: phone length byte, longest phone, id. */
const SYNC_EXTRA = 1 + 16 + 16;

/**
 * The least a sync copy is padded to: its text's padded size plus SYNC_EXTRA (at most
 * MAX_PADDED). The copy travels under the text's message id, so a server sees both sizes;
 * taken from the text's padded size alone, the copy's tells nothing the text's does not.
 */
function syncCopyFloor(content: Content): number {
  if (content.type !== "sync") return 0;
  const text = paddedSize(HEADER + utf8(content.text).length);
  return text === undefined ? 0 : Math.min(text + SYNC_EXTRA, MAX_PADDED);
}

export function pad(payload: Payload): Bytes {
  const [type, content] = body(payload.content);
  const size = paddedSize(Math.max(HEADER + content.length, syncCopyFloor(payload.content)));
  if (size === undefined) throw new PaddingError("the message is too large");
  const out = new Uint8Array(size);
  out.set(new Writer().u8(type).u64(payload.sentAt).prefixed(content, 4).finish());
  return out;
}

export function unpad(padded: Bytes): Payload {
  if (!isPaddedSize(padded.length)) throw new PaddingError("the payload is not a padded size");
  const r = new Reader(padded);
  const type = r.u8();
  const sentAt = Number(r.u64());
  const length = r.u32();
  if (length > padded.length - HEADER) throw new PaddingError("the body overruns the payload");
  const content = r.bytes(length);
  if (padded.subarray(HEADER + length).some((b) => b !== 0)) throw new PaddingError("the padding is not all zero");
  return { sentAt, content: parseContent(type, content) };
}

function parseContent(type: number, content: Bytes): Content {
  if (type === 1) return { type: "text", text: textOf(content) };
  if (type === 2) {
    const r = new Reader(content);
    const to = fromUtf8(r.prefixed(1));
    const id = toHex(r.bytes(16));
    return { type: "sync", to, id, text: textOf(content.subarray(r.offset)) };
  }
  return { type: "other", contentType: type, body: content };
}

function textOf(bytes: Uint8Array): string {
  if (bytes.length > MAX_TEXT_BYTES) throw new PaddingError("a text is at most 65 536 bytes");
  return fromUtf8(bytes);
}
