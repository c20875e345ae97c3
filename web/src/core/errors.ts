/**
 * What the user reads when something fails. Every failure reaching the page is a
 * CoreError whose code is the server's error code (docs/PROTOCOL.md §6.1)
 * or one of the client's own (`key_changed`, `unreachable`, …); this is the one
 * place that turns codes into sentences that say what to do.
 */
import { RequestError, type Frame } from "../transport/connection";

/** What an error frame may say besides its code, for the sentence and for what the page does next. */
export interface ErrorDetails {
  /** `wrong_code`: the wrong tries the code still allows; 0 once it can no longer be used (§5.1). */
  triesLeft?: number;
  /**
   * A refusal that holds for now: the milliseconds after which the same request would pass; for
   * `code_dead` and a `wrong_code` with no tries left, after which a new code can be asked for (§6).
   */
  retryAfterMs?: number;
}

export class CoreError extends Error {
  constructor(
    readonly code: string,
    message: string = describe(code),
    readonly details: ErrorDetails = {},
  ) {
    super(message);
    this.name = "CoreError";
  }
}

/**
 * The sentence for each code. A Map, not an object: a code comes from the server, and an
 * object would answer `constructor` or `__proto__` with what every object inherits.
 */
const SENTENCES = new Map<string, string>([
  ["invalid_phone", "That is not a valid phone number. Write it with + and the country code, for example +1 202 555 0101."],
  ["unknown_user", "No Carrier account has that number. Check the number, or ask them to join Carrier."],
  ["wrong_code", "That code is wrong. Check the 6-digit code and try again."],
  ["code_expired", "That code has expired. Press Get code for a new one."],
  ["code_dead", "Too many wrong codes for this number. Wait before you ask for a new code; the server did not say for how long."],
  ["rate_limited", "This number has as many sessions as the server allows, or too much was asked at once. Close Carrier where you no longer use it, or wait a moment, then try again."],
  ["no_pending_code", "Ask for a code first: press Get code."],
  ["no_link", "That link code does not work: it may be mistyped, already used or older than 10 minutes. Make a new one with carrier devices add."],
  ["key_changed", "This contact's key has changed. Compare safety numbers, then press Trust new key."],
  ["message_too_large", "This is too long to send. Shorten it and try again."],
  ["quota_exceeded", "The recipient's mailbox is full. Try again later."],
  ["too_many_devices", "This account already has the most devices the server allows. Remove one first."],
  ["unreachable", "The Carrier server cannot be reached. Check your connection; Carrier keeps trying."],
  ["disconnected", "The connection to the Carrier server dropped. Try again in a moment."],
  ["timeout", "The Carrier server did not answer in time. Try again in a moment."],
  ["empty", "Write something first."],
  ["internal", "The Carrier server had a problem. Try again in a moment."],
  ["no_devices", "That person has no device that can receive messages yet. Try again later."],
  ["not_link_code", "That is not a link code. Type the code carrier devices add printed, like abcde-fghij-klmno-pqrst-uvwxya."],
  ["no_account_key", "The other device kept the account key, so this browser cannot be linked with it. Use carrier devices add on a device that holds it."],
  ["no_account", "This browser has no Carrier account yet. Register or link it first."],
  ["account_replaced", "Your number was registered again with another key, so this browser is no longer one of its devices."],
  ["forged", "Something the server sent does not check out, so nothing was sent. Try again later."],
  ["devices_changing", "That person's devices kept changing while sending. Try again."],
  ["unknown_device", "This browser is no longer one of the account's devices."],
  ["account_disabled", "The server's operator has disabled this account."],
  ["stopped", "The connection to the Carrier server was closed. Reload the page."],
]);

export function describe(code: string, details: ErrorDetails = {}): string {
  if (code === "wrong_code" && details.triesLeft !== undefined) return wrongCode(details.triesLeft, details.retryAfterMs);
  if (code === "code_dead") return codeDead(details.retryAfterMs);
  if (code === "rate_limited" && details.retryAfterMs !== undefined) return `Too many requests in a short time. Wait ${soon(details.retryAfterMs)}, then try again.`;
  return SENTENCES.get(code) ?? "Something went wrong. Try again in a moment.";
}

/** A wrong code: the tries left, or once none are, the wait for a new code as `codeDead` tells it. */
function wrongCode(triesLeft: number, retryAfterMs: number | undefined): string {
  if (triesLeft > 0) return `That code is wrong. ${triesLeft} ${triesLeft === 1 ? "try" : "tries"} left. Check the 6-digit code and try again.`;
  if (retryAfterMs === undefined) return "That code is wrong, and it cannot be used any more. Wait before you press Get code for a new one; the server did not say for how long.";
  return `That code is wrong, and it cannot be used any more. Wait ${minutes(retryAfterMs)}, then press Get code for a new one.`;
}

/**
 * How long until a new code, as `retry_after_ms` gives it (§6): Carrier's
 * server always sends it with `code_dead` and a spent `wrong_code`. Without it
 * the wait is not known, the window being the operator's to set (`[otp]
 * window_secs`), so none is named; the message names it too, but messages are
 * not to be parsed.
 */
function codeDead(retryAfterMs: number | undefined): string {
  if (retryAfterMs === undefined) return SENTENCES.get("code_dead")!;
  return `Too many wrong codes for this number. Wait ${minutes(retryAfterMs)}, then ask for a new code.`;
}

/**
 * A rate limit's wait (sends, claims, codes asked for): often seconds, so seconds below a minute.
 * Without retry_after_ms, rate_limited is the session limit or the request budget before login,
 * which no wait is known for.
 */
function soon(ms: number): string {
  if (ms >= 60_000) return minutes(ms);
  const n = Math.max(1, Math.ceil(ms / 1000));
  return `${n} ${n === 1 ? "second" : "seconds"}`;
}

function minutes(ms: number): string {
  const n = Math.max(1, Math.ceil(ms / 60_000));
  return `${n} ${n === 1 ? "minute" : "minutes"}`;
}

/** The members of an error frame the page uses; anything not a whole number of the right range counts as absent. */
export function errorDetails(frame: Frame): ErrorDetails {
  const count = (value: unknown) => (typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : undefined);
  const details: ErrorDetails = {};
  const triesLeft = count(frame.tries_left);
  const retryAfterMs = count(frame.retry_after_ms);
  if (triesLeft !== undefined) details.triesLeft = triesLeft;
  if (retryAfterMs !== undefined) details.retryAfterMs = retryAfterMs;
  return details;
}

/** Any thrown value as a CoreError; server errors keep their code, with our sentence where we have one. */
export function asCoreError(error: unknown): CoreError {
  if (error instanceof CoreError) return error;
  if (error instanceof RequestError) {
    const details = errorDetails(error.frame);
    return new CoreError(error.code, SENTENCES.has(error.code) ? describe(error.code, details) : error.message, details);
  }
  return new CoreError("internal", describe("internal"));
}

/**
 * The code that was typed can never register: the page goes back to asking for
 * a new one rather than leave a code box open that no code can pass.
 */
export function needsNewCode(error: CoreError): boolean {
  if (error.code === "wrong_code") return error.details.triesLeft === 0;
  return error.code === "code_dead" || error.code === "code_expired" || error.code === "no_pending_code";
}
