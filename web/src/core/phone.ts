/**
 * Phone numbers as a person types them. The server has the final word (it knows
 * each country's numbering plan, PROTOCOL §5); this check only catches what can
 * never be valid, so the page can say so without a round trip.
 */
import { CoreError } from "./errors";

/** The loose spellings the server accepts: spaces, dashes, dots and parentheses around the digits. */
export function canonicalPhone(typed: string): string {
  const trimmed = typed.trim();
  if (trimmed.length > 40 || !/^\+[0-9 ().-]*$/.test(trimmed)) throw new CoreError("invalid_phone");
  const canonical = "+" + trimmed.slice(1).replace(/[ ().-]/g, "");
  if (!/^\+[1-9][0-9]{1,14}$/.test(canonical)) throw new CoreError("invalid_phone");
  return canonical;
}
