/**
 * What the user reads when something fails. Every failure reaching the page is a
 * CoreError whose code is the server's error code (docs/PROTOCOL.md §6.1)
 * or one of the client's own (`key_changed`, `unreachable`, …); this is the one
 * place that turns codes into sentences that say what to do.
 */
import { RequestError } from "../transport/connection";

export class CoreError extends Error {
  constructor(
    readonly code: string,
    message: string = describe(code),
  ) {
    super(message);
    this.name = "CoreError";
  }
}

const SENTENCES: Record<string, string> = {
  invalid_phone: "That is not a valid phone number. Write it with + and the country code, for example +1 202 555 0101.",
  unknown_user: "No Carrier account has that number. Check the number, or ask them to join Carrier.",
  wrong_code: "That code is wrong. Check the 6-digit code and try again.",
  code_expired: "That code has expired. Press Get code for a new one.",
  code_dead: "Too many wrong codes for this number. Wait an hour, then ask for a new code.",
  rate_limited: "Too many codes were asked for this number. Wait a while, then try again.",
  no_pending_code: "Ask for a code first: press Get code.",
  no_link: "That link code does not work: it may be mistyped, already used or older than 10 minutes. Make a new one with carrier devices add.",
  key_changed: "This contact's key has changed. Compare safety numbers, then press Trust new key.",
  message_too_large: "This is too long to send. Shorten it and try again.",
  quota_exceeded: "The recipient's mailbox is full. Try again later.",
  too_many_devices: "This account already has the most devices the server allows. Remove one first.",
  unreachable: "The Carrier server cannot be reached. Check your connection; Carrier keeps trying.",
  disconnected: "The connection to the Carrier server dropped. Try again in a moment.",
  timeout: "The Carrier server did not answer in time. Try again in a moment.",
  empty: "Write something first.",
  internal: "The Carrier server had a problem. Try again in a moment.",
  no_devices: "That person has no device that can receive messages yet. Try again later.",
  not_link_code: "That is not a link code. Type the code carrier devices add printed, like abcde-fghij-klmno-pqrst-uvwxyz.",
  no_account_key: "The other device kept the account key, so this browser cannot be linked with it. Use carrier devices add on a device that holds it.",
  no_account: "This browser has no Carrier account yet. Register or link it first.",
  account_replaced: "Your number was registered again with another key, so this browser is no longer one of its devices.",
  forged: "Something the server sent does not check out, so nothing was sent. Try again later.",
  devices_changing: "That person's devices kept changing while sending. Try again.",
  unknown_device: "This browser is no longer one of the account's devices.",
  account_disabled: "The server's operator has disabled this account.",
  stopped: "The connection to the Carrier server was closed. Reload the page.",
};

export function describe(code: string): string {
  return SENTENCES[code] ?? "Something went wrong. Try again in a moment.";
}

/** Any thrown value as a CoreError; server errors keep their code, with our sentence where we have one. */
export function asCoreError(error: unknown): CoreError {
  if (error instanceof CoreError) return error;
  if (error instanceof RequestError) return new CoreError(error.code, SENTENCES[error.code] ?? error.message);
  return new CoreError("internal", describe("internal"));
}
