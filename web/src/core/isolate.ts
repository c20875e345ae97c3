/**
 * Text that came from the network (a peer's device name, a number, a server's
 * reason), set inside a sentence of this client's own. Its bidirectional
 * controls are removed and it is wrapped in FIRST STRONG ISOLATE … POP
 * DIRECTIONAL ISOLATE, so an override in it (U+202E, say) cannot reorder the
 * words around it, and a stray POP in it cannot close the isolate early. Text
 * shown on its own goes in an element with `dir="auto"` or a <bdi> instead.
 */

/** Embeddings, overrides, isolates and the directional marks. */
const BIDI_CONTROLS = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

export const FSI = "\u2068";
export const PDI = "\u2069";

export function isolate(text: string): string {
  return FSI + text.replace(BIDI_CONTROLS, "") + PDI;
}
