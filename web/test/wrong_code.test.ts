/**
 * A wrong registration code (PROTOCOL.md §5.1, §6.1): the `tries_left` of the
 * server's error frame reaches the page, whose sentence says how many tries are
 * left, and after the last one that the code is spent and what to do; only then
 * does the page go back to asking for a new code.
 */
import "fake-indexeddb/auto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { toBase64 } from "../src/crypto/bytes";
import { asCoreError, CoreError, describe as sentence, errorDetails, needsNewCode } from "../src/core/errors";
import { RemoteCore } from "../src/core/remote";
import { Store } from "../src/storage/store";
import { RequestError, type Frame } from "../src/transport/connection";

const ME = "+12025550101";
const WRONG = "That code is wrong. Check the 6-digit code and try again.";

/** What the server sends for a wrong code, as in PROTOCOL.md §6. */
function wrongCode(fields: Frame): RequestError {
  const frame = { re: 2, type: "error", code: "wrong_code", message: "wrong code; 4 tries left", ...fields };
  return new RequestError("wrong_code", String(frame.message), frame);
}

describe("the sentence for a wrong code", () => {
  it("says how many tries are left", () => {
    const four = asCoreError(wrongCode({ tries_left: 4 }));
    expect(four).toBeInstanceOf(CoreError);
    expect(four.code).toBe("wrong_code");
    expect(four.details.triesLeft).toBe(4);
    expect(four.message).toBe("That code is wrong. 4 tries left. Check the 6-digit code and try again.");
    expect(needsNewCode(four)).toBe(false);

    const one = asCoreError(wrongCode({ message: "wrong code; 1 try left", tries_left: 1 }));
    expect(one.message).toBe("That code is wrong. 1 try left. Check the 6-digit code and try again.");
    expect(needsNewCode(one)).toBe(false);
  });

  it("says after the last try that the code is spent, and to wait for a new one, naming no wait the frame does not give", () => {
    const spent = asCoreError(wrongCode({ message: "wrong code; no tries left; register again in 3501 seconds", tries_left: 0 }));
    expect(spent.details.triesLeft).toBe(0);
    expect(spent.message).toBe("That code is wrong, and it cannot be used any more. Wait before you press Get code for a new one; the server did not say for how long.");
    expect(needsNewCode(spent)).toBe(true);
  });

  it("gives the wait in minutes, rounded up, when the frame says when", () => {
    expect(asCoreError(wrongCode({ tries_left: 0, retry_after_ms: 3_501_000 })).message).toBe(
      "That code is wrong, and it cannot be used any more. Wait 59 minutes, then press Get code for a new one.",
    );
    expect(sentence("wrong_code", { triesLeft: 0, retryAfterMs: 60_000 })).toContain("Wait 1 minute, then");
    expect(sentence("wrong_code", { triesLeft: 0, retryAfterMs: 1 })).toContain("Wait 1 minute, then");
  });

  it("keeps the plain sentence without tries_left, or with one that is not a count", () => {
    for (const fields of [{ message: "a code is 6 digits" }, { tries_left: "4" }, { tries_left: -1 }, { tries_left: 1.5 }, { tries_left: null }]) {
      const error = asCoreError(wrongCode(fields));
      expect(error.details).toEqual({});
      expect(error.message).toBe(WRONG);
      expect(needsNewCode(error)).toBe(false);
    }
    expect(sentence("wrong_code")).toBe(WRONG);
    expect(errorDetails({ retry_after_ms: 2000, tries_left: 3 })).toEqual({ triesLeft: 3, retryAfterMs: 2000 });
  });

  it("gives code_dead's wait in minutes when the frame says when, and names none when it does not", () => {
    const dead = (fields: Frame) =>
      asCoreError(new RequestError("code_dead", "too many wrong codes; try again in 3501 seconds", { re: 2, type: "error", code: "code_dead", ...fields }));
    expect(dead({ retry_after_ms: 3_501_000 }).message).toBe("Too many wrong codes for this number. Wait 59 minutes, then ask for a new code.");
    expect(dead({ retry_after_ms: 3_501_000 }).details.retryAfterMs).toBe(3_501_000);
    expect(dead({ retry_after_ms: 1_000 }).message).toBe("Too many wrong codes for this number. Wait 1 minute, then ask for a new code.");
    // The server's window is its operator's to set: without retry_after_ms the wait is not known.
    const unknown = "Too many wrong codes for this number. Wait before you ask for a new code; the server did not say for how long.";
    expect(dead({}).message).toBe(unknown);
    expect(dead({ retry_after_ms: "3501000" }).message).toBe(unknown);
    expect(sentence("code_dead")).toBe(unknown);
    expect(new CoreError("code_dead").message).toBe(unknown);
  });

  it("gives rate_limited's wait from the frame, in seconds below a minute, for codes and sends alike", () => {
    const limited = (fields: Frame) =>
      asCoreError(new RequestError("rate_limited", "sending too fast", { re: 2, type: "error", code: "rate_limited", ...fields }));
    expect(limited({ retry_after_ms: 1_200 }).message).toBe("Too many requests in a short time. Wait 2 seconds, then try again.");
    expect(limited({ retry_after_ms: 1 }).message).toBe("Too many requests in a short time. Wait 1 second, then try again.");
    expect(limited({ retry_after_ms: 59_999 }).message).toBe("Too many requests in a short time. Wait 60 seconds, then try again.");
    expect(limited({ retry_after_ms: 360_000 }).message).toBe("Too many requests in a short time. Wait 6 minutes, then try again.");
    const sessions = limited({});
    expect(sessions.message).not.toContain("code");
    expect(sessions.message).toBe(sentence("rate_limited"));
    expect(sessions.message).toContain("sessions");
  });

  it("sends the page back to Get code for every answer that no code can pass", () => {
    for (const code of ["code_dead", "code_expired", "no_pending_code"]) expect(needsNewCode(new CoreError(code)), code).toBe(true);
    for (const code of ["invalid_phone", "rate_limited", "bad_signature", "unreachable"]) expect(needsNewCode(new CoreError(code)), code).toBe(false);
  });
});

/** A server's /ws that greets, gives a code and a challenge, and answers verify from a script. */
class ScriptedSocket {
  static verifyAnswers: Frame[] = [];
  static sent: Frame[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: unknown) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;

  constructor() {
    setTimeout(() => {
      this.onopen?.({});
      this.reply({ type: "hello", challenge: toBase64(new Uint8Array(32).fill(1)), connection: toBase64(new Uint8Array(16).fill(2)), fingerprint: "ab".repeat(32) });
    });
  }

  send(data: string): void {
    const request = JSON.parse(data) as Frame;
    ScriptedSocket.sent.push(request);
    const re = request.seq;
    if (request.type === "register") this.reply({ re, type: "code_sent", phone: request.phone });
    else if (request.type === "challenge") this.reply({ re, type: "challenge", nonce: toBase64(new Uint8Array(32).fill(3)) });
    else if (request.type === "verify") this.reply({ re, ...ScriptedSocket.verifyAnswers.shift()! });
    else if (request.type !== "ping") throw new Error(`unexpected ${request.type}`);
  }

  close(): void {}

  private reply(frame: Frame): void {
    setTimeout(() => this.onmessage?.({ data: JSON.stringify(frame) }));
  }
}

afterEach(() => vi.unstubAllGlobals());

describe("the real core on a wrong code", () => {
  it("hands the server's tries_left to the page with the error", async () => {
    vi.stubGlobal("WebSocket", ScriptedSocket);
    ScriptedSocket.verifyAnswers = [
      { type: "error", code: "wrong_code", message: "wrong code; 4 tries left", tries_left: 4 },
      { type: "error", code: "wrong_code", message: "wrong code; no tries left; register again in 3501 seconds", tries_left: 0, retry_after_ms: 3_501_000 },
    ];
    const core = new RemoteCore(await Store.open("wrong-code"), "ws://carrier.test/ws");
    expect(await core.resume()).toBeNull();
    expect(await core.requestCode(ME)).toBe(ME);

    const first = await core.register(ME, "123456").catch((error: unknown) => error);
    expect(first).toBeInstanceOf(CoreError);
    expect((first as CoreError).details.triesLeft).toBe(4);
    expect((first as CoreError).message).toBe("That code is wrong. 4 tries left. Check the 6-digit code and try again.");

    const last = await core.register(ME, "654321").catch((error: unknown) => error);
    expect((last as CoreError).details.triesLeft).toBe(0);
    expect(needsNewCode(last as CoreError)).toBe(true);
    expect((last as CoreError).details.retryAfterMs).toBe(3_501_000);
    expect((last as CoreError).message).toBe("That code is wrong, and it cannot be used any more. Wait 59 minutes, then press Get code for a new one.");

    expect(ScriptedSocket.sent.filter((f) => f.type === "verify").map((f) => f.code)).toEqual(["123456", "654321"]);
  });
});
