/** The WebSocket transport against a scripted socket, with fake timers. */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MAX_RESPONSE_FRAME, RequestError, retryDelay, Transport, type ConnectionState, type Frame, type SocketLike } from "../src/transport/connection";

class FakeSocket implements SocketLike {
  sent: Frame[] = [];
  closed = false;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: unknown) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.closed = true;
  }
  serverSends(frame: Frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  serverCloses() {
    this.onclose?.({});
  }
  answer(type: string, fields: Frame = {}) {
    const req = this.sent.find((f) => f.type === type);
    this.serverSends({ re: req!.seq, type: `${type}_answer`, ...fields });
  }
}

function setup(onOpen?: (req: (t: string, f?: Frame) => Promise<Frame>) => Promise<void>) {
  const sockets: FakeSocket[] = [];
  const states: ConnectionState[] = [];
  const events: Frame[] = [];
  const transport = new Transport({
    url: "ws://test/ws",
    connect: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
    random: () => 0.5,
    onOpen,
    onEvent: (f) => events.push(f),
    onState: (s) => states.push(s),
  });
  return { transport, sockets, states, events };
}

const flush = () => vi.advanceTimersByTimeAsync(0);

/** A transport whose first socket has opened. */
async function connected() {
  const t = setup();
  t.transport.start();
  t.sockets[0].onopen?.({});
  await flush();
  return t;
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("Transport", () => {
  it("matches answers by re, whatever their order", async () => {
    const { transport, sockets } = await connected();
    const a = transport.request("send", { id: "a" });
    const b = transport.request("fetch", { limit: 1 });
    await flush();
    const [sa, sb] = sockets[0].sent;
    expect([sa.seq, sb.seq]).toEqual([1, 2]);
    sockets[0].serverSends({ re: sb.seq, type: "messages", messages: [] });
    sockets[0].serverSends({ re: sa.seq, type: "accepted", id: "a" });
    expect(await a).toMatchObject({ type: "accepted", id: "a" });
    expect(await b).toMatchObject({ type: "messages" });
  });

  it("turns error answers into RequestError with the server's code", async () => {
    const { transport, sockets } = await connected();
    const p = transport.request("lookup", { phone: "+12025550199" });
    await flush();
    sockets[0].serverSends({ re: 1, type: "error", code: "unknown_user", message: "no such user" });
    await expect(p).rejects.toMatchObject({ code: "unknown_user" });
  });

  it("hands frames without re to the event listener", async () => {
    const { sockets, events } = await connected();
    sockets[0].serverSends({ type: "message", id: "00", from: "+12025550101" });
    sockets[0].serverSends({ type: "error", code: "shutting_down", message: "bye" });
    expect(events.map((e) => e.type)).toEqual(["message", "error"]);
  });

  it("logs in again before any waiting request goes out", async () => {
    const { transport, sockets } = setup(async (request) => {
      await request("login", { phone: "+12025550101" });
    });
    transport.start();
    const lookup = transport.request("lookup", { phone: "+12025550102" });
    sockets[0].onopen?.({});
    await flush();
    expect(sockets[0].sent.map((f) => f.type)).toEqual(["login"]);
    sockets[0].answer("login");
    await flush();
    expect(sockets[0].sent.map((f) => f.type)).toEqual(["login", "lookup"]);
    sockets[0].answer("lookup", { phone: "+12025550102" });
    expect(await lookup).toMatchObject({ phone: "+12025550102" });
  });

  it("fails requests in flight on a drop and reconnects with growing waits", async () => {
    const { transport, sockets, states } = await connected();
    const p = transport.request("send", { id: "x" });
    await flush();
    sockets[0].serverCloses();
    await expect(p).rejects.toMatchObject({ code: "disconnected" });
    const waits: number[] = [];
    for (let i = 0; i < 4; i++) {
      const last = states[states.length - 1];
      expect(last.state).toBe("waiting");
      waits.push((last as { retryInMs: number }).retryInMs);
      await vi.advanceTimersByTimeAsync(waits[i]);
      sockets[sockets.length - 1].serverCloses(); // refused at once
    }
    expect(waits).toEqual([250, 500, 1000, 2000]);
    expect(sockets.length).toBe(5);
  });

  it("starts the waits over after a connection that lasted", async () => {
    const { transport, sockets, states } = setup();
    transport.start();
    sockets[0].serverCloses();
    await vi.advanceTimersByTimeAsync(250);
    sockets[1].serverCloses();
    expect(states.at(-1)).toMatchObject({ state: "waiting", retryInMs: 500 });
    await vi.advanceTimersByTimeAsync(500);
    sockets[2].onopen?.({});
    await vi.advanceTimersByTimeAsync(10_000);
    sockets[2].serverCloses();
    expect(states.at(-1)).toMatchObject({ state: "waiting", retryInMs: 250 });
  });

  it("says the server is unreachable when a request waits too long", async () => {
    const { transport } = setup();
    transport.start();
    const p = transport.request("list");
    const check = expect(p).rejects.toMatchObject({ code: "unreachable" });
    await vi.advanceTimersByTimeAsync(31_000);
    await check;
  });

  it("refuses a request over the 128 KiB frame limit without sending it", async () => {
    const { transport, sockets } = await connected();
    await expect(transport.request("broadcast", { text: "x".repeat(140_000) })).rejects.toBeInstanceOf(RequestError);
    expect(sockets[0].sent).toEqual([]);
  });

  it("stays within ±25 % of the doubling schedule, capped at 30 s", () => {
    expect(retryDelay(1, () => 0)).toBe(188);
    expect(retryDelay(1, () => 1)).toBe(313);
    expect(retryDelay(20, () => 0.5)).toBe(30_000);
  });
});

describe("Transport with the server's hello", () => {
  it("logs in only once the hello has come, gives it to onOpen, keeps it from the event stream, and reconnects on demand", async () => {
    const sockets: FakeSocket[] = [];
    const events: Frame[] = [];
    const greeted: unknown[] = [];
    const transport = new Transport({
      url: "ws://test/ws",
      awaitHello: true,
      connect: () => {
        const s = new FakeSocket();
        sockets.push(s);
        return s;
      },
      random: () => 0.5,
      onOpen: async (request, hello) => {
        greeted.push(hello);
        await request("device_login");
      },
      onEvent: (f) => events.push(f),
    });
    transport.start();
    sockets[0].onopen?.({});
    const waiting = transport.request("fetch");
    await flush();
    expect(sockets[0].sent).toEqual([]);
    const hello = { type: "hello", version: 1, challenge: "c", connection: "k", fingerprint: "f" };
    sockets[0].serverSends(hello);
    await flush();
    const checked = { challenge: "c", connection: "k", fingerprint: "f" };
    expect(greeted).toEqual([checked]);
    expect(transport.hello).toEqual(checked);
    expect(sockets[0].sent.map((f) => f.type)).toEqual(["device_login"]);
    sockets[0].answer("device_login");
    await flush();
    expect(sockets[0].sent.map((f) => f.type)).toEqual(["device_login", "fetch"]);
    sockets[0].answer("fetch");
    await expect(waiting).resolves.toMatchObject({ type: "fetch_answer" });
    expect(events).toEqual([]);

    transport.reconnect();
    expect(sockets[0].closed).toBe(true);
    expect(sockets).toHaveLength(2);
    expect(transport.hello).toBeNull();
    transport.stop();
  });

  it("keeps the whole error frame, for refusals that carry more", async () => {
    const { transport, sockets } = await connected();
    const sending = transport.request("device_send");
    await flush();
    sockets[0].serverSends({ re: sockets[0].sent[0].seq, type: "error", code: "stale_devices", message: "m", device_list: "AA==", bundles: [] });
    const error = (await sending.catch((e) => e)) as RequestError;
    expect(error.code).toBe("stale_devices");
    expect(error.frame.device_list).toBe("AA==");
  });
});

describe("a hostile or broken server", () => {
  /** A logged-in transport that collects what it refused. */
  async function hostile() {
    const sockets: FakeSocket[] = [];
    const refused: string[] = [];
    const events: Frame[] = [];
    const greeted: unknown[] = [];
    const transport = new Transport({
      url: "ws://test/ws",
      awaitHello: true,
      connect: () => {
        const s = new FakeSocket();
        sockets.push(s);
        return s;
      },
      random: () => 0.5,
      onOpen: async (_request, hello) => void greeted.push(hello),
      onEvent: (f) => events.push(f),
      onProtocolError: (reason) => refused.push(reason),
    });
    transport.start();
    sockets[0].onopen?.({});
    sockets[0].serverSends({ type: "hello", version: 1, challenge: "c", connection: "k", fingerprint: "f" });
    await flush();
    const raw = (data: unknown) => sockets[0].onmessage?.({ data });
    return { transport, sockets, refused, events, greeted, raw };
  }

  it("refuses frames that are not JSON objects, and carries on", async () => {
    const { transport, sockets, refused, events, raw } = await hostile();
    raw("<script>alert(1)</script>");
    raw("[1,2,3]");
    raw("null");
    raw("42");
    raw(new Uint8Array([1, 2, 3]));
    raw(JSON.stringify({ no: "type" }));
    expect(refused).toHaveLength(6);
    expect(events).toEqual([]);
    const ping = transport.request("ping");
    await flush();
    sockets[0].answer("ping");
    await expect(ping).resolves.toMatchObject({ type: "ping_answer" });
    expect(sockets).toHaveLength(1);
  });

  it("drops the connection on a frame over MAX_RESPONSE_FRAME, and dials again", async () => {
    const { sockets, refused, raw } = await hostile();
    raw(JSON.stringify({ type: "message", pad: "x".repeat(MAX_RESPONSE_FRAME) }));
    expect(refused).toEqual([`The server sent a frame over ${MAX_RESPONSE_FRAME} bytes; it was ignored.`]);
    expect(sockets[0].closed).toBe(true);
    sockets[0].serverCloses();
    await vi.advanceTimersByTimeAsync(1000);
    expect(sockets).toHaveLength(2);
  });

  it("refuses a multi-byte frame over the limit though its UTF-16 length is under it", async () => {
    const { refused, raw } = await hostile();
    raw(JSON.stringify({ type: "broadcast", text: "é".repeat(MAX_RESPONSE_FRAME / 2) }));
    expect(refused).toHaveLength(1);
  });

  it("refuses a second hello, unsolicited answers and unknown pushed types; a late answer is dropped quietly", async () => {
    const { transport, sockets, refused, events, greeted } = await hostile();
    sockets[0].serverSends({ type: "hello", challenge: "evil", connection: "k2", fingerprint: "f2" });
    expect(transport.hello).toEqual({ challenge: "c", connection: "k", fingerprint: "f" });
    expect(greeted).toHaveLength(1);
    sockets[0].serverSends({ re: 999, type: "fetch_answer", messages: [] });
    sockets[0].serverSends({ re: "1", type: "fetch_answer" });
    sockets[0].serverSends({ type: "registered", phone: "+1" });
    expect(refused).toEqual([
      "The server sent a second hello; it was ignored.",
      "The server sent an answer to a request never made; it was ignored.",
      "The server sent an answer to a request never made; it was ignored.",
      'The server sent an unexpected "registered" frame; it was ignored.',
    ]);
    const slow = transport.request("fetch").catch((e: RequestError) => e.code);
    await flush();
    const seq = sockets[0].sent[0].seq;
    await vi.advanceTimersByTimeAsync(30_000);
    expect(await slow).toBe("timeout");
    sockets[0].serverSends({ re: seq, type: "fetch_answer" });
    expect(refused).toHaveLength(4);
    sockets[0].serverSends({ type: "error", code: "shutting_down", message: "bye" });
    expect(events).toEqual([{ type: "error", code: "shutting_down", message: "bye" }]);
  });

  it("refuses a hello whose fields are not strings, and waits for a good one", async () => {
    const sockets: FakeSocket[] = [];
    const refused: string[] = [];
    const transport = new Transport({
      url: "ws://test/ws",
      awaitHello: true,
      connect: () => (sockets.push(new FakeSocket()), sockets[sockets.length - 1]),
      onOpen: async () => undefined,
      onProtocolError: (reason) => refused.push(reason),
    });
    transport.start();
    sockets[0].onopen?.({});
    sockets[0].serverSends({ type: "hello", challenge: { toString: 1 }, connection: "k", fingerprint: "f" });
    await flush();
    expect(transport.hello).toBeNull();
    expect(refused).toEqual(["The server sent a hello that is not well formed; it was ignored."]);
    sockets[0].serverSends({ type: "hello", challenge: "c", connection: "k", fingerprint: "f" });
    await flush();
    expect(transport.hello).toEqual({ challenge: "c", connection: "k", fingerprint: "f" });
    transport.stop();
  });
});
