/**
 * The client protocol over a WebSocket: one JSON object per WebSocket message, in
 * both directions (docs/PROTOCOL.md §4). Requests carry `seq`; the answer carries
 * the same number as `re`, and answers are matched by it, never by order (sends
 * are answered after their commit, §4.3). Frames without `re` are pushed events.
 *
 * The connection comes back by itself after a drop, waiting a little longer after
 * each failure, as the servers' own links do (§19.11). Each time it opens, the
 * `onOpen` hook runs first (to log in again) and only then are waiting requests
 * let through, so no request ever reaches a server on a session it did not set up.
 */

export type Frame = Record<string, unknown>;

/** What the socket must offer; the browser's WebSocket does, and tests pass a fake. */
export interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
}

export type ConnectionState =
  | { state: "connecting"; attempt: number }
  | { state: "open" }
  | { state: "waiting"; attempt: number; retryInMs: number }
  | { state: "stopped" };

/** An error answer from the server, or a local failure given a code of the same kind. */
export class RequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** The whole error frame, for errors that carry more (`stale_devices` carries the current devices). */
    readonly frame: Frame = {},
  ) {
    super(message);
    this.name = "RequestError";
  }
}

/** Request sender handed to `onOpen`: it goes out before the connection counts as open. */
export type Requester = (type: string, fields?: Frame) => Promise<Frame>;

/**
 * The server's first frame on a WebSocket (docs/PROTOCOL.md §12.3): the fresh
 * challenge, connection id and server key fingerprint every proof of this
 * connection is bound to.
 */
export interface Hello {
  challenge: string;
  connection: string;
  fingerprint: string;
}

export interface TransportOptions {
  url: string;
  /**
   * Runs after every (re)connect, before waiting requests go out; a throw drops the
   * connection. With `awaitHello` it runs once the server's `hello` has arrived and is given it.
   */
  onOpen?: (request: Requester, hello: Hello | null) => Promise<void>;
  /** Wait for the server's `hello` frame before the connection counts as open (the real server sends one). */
  awaitHello?: boolean;
  /** Pushed frames: `message`, `broadcast`, and errors tied to no request. */
  onEvent?: (frame: Frame) => void;
  /**
   * A frame the protocol does not allow: not JSON, not an object, too large, a
   * second `hello`, an answer to a request never made, a pushed event of an unknown
   * type. It is dropped (a frame over the size limit also drops the connection)
   * and told here, so the page can say so; nothing else changes.
   */
  onProtocolError?: (reason: string) => void;
  onState?: (state: ConnectionState) => void;
  connect?: (url: string) => SocketLike;
  random?: () => number;
  requestTimeoutMs?: number;
  pingIntervalMs?: number;
}

/** Limits from docs/PROTOCOL.md §3 and the reconnection rule of §19.11, scaled for a person waiting. */
export const MAX_REQUEST_FRAME = 131_072;
/** The largest server→client frame a client reads (PROTOCOL.md §3, `MAX_RESPONSE_FRAME`). */
export const MAX_RESPONSE_FRAME = 4_194_304;
/** Pushed frames the protocol has (§4): anything else without `re` is refused. */
const PUSHED_TYPES = new Set(["message", "broadcast", "error"]);
export const FIRST_RETRY_MS = 250;
export const LONGEST_RETRY_MS = 30_000;
export const STABLE_CONNECTION_MS = 5_000;
/** How long a request waits for a connection that has already failed before it says the server is unreachable. */
export const UNREACHABLE_AFTER_MS = 4_000;

/** The wait before reconnection attempt `attempt` (1-based): doubling, capped, ±25 % jitter. */
export function retryDelay(attempt: number, random: () => number): number {
  const base = Math.min(LONGEST_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.75 + random() * 0.5));
}

interface Pending {
  resolve: (frame: Frame) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class Transport {
  private socket: SocketLike | null = null;
  private ready = false;
  private stopped = true;
  private nextSeq = 1;
  private failures = 0;
  private openedAt = 0;
  private readonly pending = new Map<number, Pending>();
  private waiters: Array<() => void> = [];
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private helloFrame: Hello | null = null;
  private onHello: ((hello: Hello) => void) | null = null;
  private readonly options: Required<Omit<TransportOptions, "onOpen" | "onEvent" | "onState" | "awaitHello" | "onProtocolError">> & TransportOptions;

  constructor(options: TransportOptions) {
    this.options = {
      connect: (url) => new WebSocket(url) as unknown as SocketLike,
      random: Math.random,
      requestTimeoutMs: 30_000,
      pingIntervalMs: 60_000,
      ...options,
    };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.dial();
  }

  /** The `hello` of the connection open now (null before one arrives). */
  get hello(): Hello | null {
    return this.helloFrame;
  }

  /** Drops the connection and dials again at once, e.g. to log in afresh as a device. */
  reconnect(): void {
    if (this.stopped) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.drop(new RequestError("disconnected", "The connection dropped; try again."));
    this.dial();
  }

  /** Closes for good: pending and waiting requests fail with `stopped`. */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.drop(new RequestError("stopped", "The connection was closed."));
    this.waiters.forEach((wake) => wake());
    this.waiters = [];
    this.setState({ state: "stopped" });
  }

  /** Sends a request once the connection is open (and logged in again), and resolves with its answer. */
  async request(type: string, fields: Frame = {}): Promise<Frame> {
    // Once a connection has failed, a person waiting is told soon rather than after the full timeout.
    const wait = this.failures > 0 ? Math.min(this.options.requestTimeoutMs, UNREACHABLE_AFTER_MS) : this.options.requestTimeoutMs;
    const deadline = Date.now() + wait;
    while (!this.ready) {
      if (this.stopped) throw new RequestError("stopped", "The connection was closed.");
      await this.untilReady(deadline - Date.now());
      if (!this.ready && Date.now() >= deadline) throw unreachable();
    }
    return this.send(type, fields);
  }

  private send(type: string, fields: Frame): Promise<Frame> {
    const socket = this.socket;
    if (!socket) return Promise.reject(new RequestError("disconnected", "The connection dropped; try again."));
    const seq = this.nextSeq++;
    const text = JSON.stringify({ ...fields, seq, type });
    if (new TextEncoder().encode(text).length > MAX_REQUEST_FRAME) {
      return Promise.reject(new RequestError("frame_too_large", "This is too large to send."));
    }
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new RequestError("timeout", "The server did not answer in time."));
      }, this.options.requestTimeoutMs);
      this.pending.set(seq, { resolve, reject, timer });
      socket.send(text);
    });
  }

  private untilReady(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, ms));
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private dial(): void {
    this.setState({ state: "connecting", attempt: this.failures + 1 });
    let socket: SocketLike;
    try {
      socket = this.options.connect(this.options.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    this.helloFrame = null;
    const hello = new Promise<Hello>((resolve) => (this.onHello = resolve));
    socket.onmessage = (ev) => this.receive(socket, ev.data);
    socket.onerror = () => socket.close();
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.drop(new RequestError("disconnected", "The connection dropped; try again."));
      if (!this.stopped) this.scheduleRetry();
    };
    socket.onopen = () => void this.opened(socket, this.options.awaitHello ? hello : Promise.resolve(null));
  }

  private async opened(socket: SocketLike, hello: Promise<Hello | null>): Promise<void> {
    this.openedAt = Date.now();
    try {
      const greeting = await hello;
      if (this.socket !== socket) return;
      await this.options.onOpen?.((type, fields = {}) => this.send(type, fields), greeting);
    } catch {
      socket.close();
      return;
    }
    if (this.socket !== socket) return;
    this.ready = true;
    this.pingTimer = setInterval(() => {
      this.send("ping", {}).catch(() => socket.close());
    }, this.options.pingIntervalMs);
    this.setState({ state: "open" });
    const waiters = this.waiters;
    this.waiters = [];
    waiters.forEach((wake) => wake());
  }

  private receive(socket: SocketLike, data: unknown): void {
    if (this.socket !== socket) return;
    if (typeof data !== "string") return this.refuse("a binary frame");
    // A UTF-16 length is at most the UTF-8 length, so only long strings need encoding.
    if (data.length > MAX_RESPONSE_FRAME || (data.length > MAX_RESPONSE_FRAME / 3 && new TextEncoder().encode(data).length > MAX_RESPONSE_FRAME)) {
      this.refuse(`a frame over ${MAX_RESPONSE_FRAME} bytes`);
      socket.close();
      return;
    }
    let frame: unknown;
    try {
      frame = JSON.parse(data);
    } catch {
      return this.refuse("a frame that is not JSON");
    }
    if (typeof frame !== "object" || frame === null || Array.isArray(frame)) return this.refuse("a frame that is not a JSON object");
    this.take(frame as Frame);
  }

  private take(frame: Frame): void {
    const re = frame.re;
    if (typeof frame.type !== "string") return this.refuse("a frame without a type");
    if (re === undefined) {
      if (frame.type === "hello") return this.takeHello(frame);
      if (!PUSHED_TYPES.has(frame.type)) return this.refuse(`an unexpected "${frame.type.slice(0, 40)}" frame`);
      this.options.onEvent?.(frame);
      return;
    }
    if (typeof re !== "number" || !Number.isSafeInteger(re) || re < 1 || re >= this.nextSeq) return this.refuse("an answer to a request never made");
    const pending = this.pending.get(re);
    if (!pending) return; // the answer to a request that timed out or was dropped: late, not hostile
    this.pending.delete(re);
    clearTimeout(pending.timer);
    if (frame.type === "error") {
      pending.reject(new RequestError(String(frame.code ?? "internal"), String(frame.message ?? "The server refused the request."), frame));
    } else {
      pending.resolve(frame);
    }
  }

  /** The connection's one `hello`: its three fields are strings, and a second one is refused. */
  private takeHello(frame: Frame): void {
    const { challenge, connection, fingerprint } = frame;
    if (this.helloFrame) return this.refuse("a second hello");
    if (typeof challenge !== "string" || typeof connection !== "string" || typeof fingerprint !== "string") return this.refuse("a hello that is not well formed");
    this.helloFrame = { challenge, connection, fingerprint };
    this.onHello?.(this.helloFrame);
    this.onHello = null;
  }

  private refuse(what: string): void {
    this.options.onProtocolError?.(`The server sent ${what}; it was ignored.`);
  }

  /** Forgets the socket; requests in flight fail, since whether they arrived is unknown. */
  private drop(error: RequestError): void {
    const socket = this.socket;
    this.socket = null;
    this.ready = false;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (socket) {
      socket.onclose = socket.onmessage = socket.onopen = socket.onerror = null;
      socket.close();
    }
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
  }

  private scheduleRetry(): void {
    const lasted = this.openedAt ? Date.now() - this.openedAt : 0;
    this.failures = lasted >= STABLE_CONNECTION_MS ? 1 : this.failures + 1;
    this.openedAt = 0;
    const retryInMs = retryDelay(this.failures, this.options.random);
    this.setState({ state: "waiting", attempt: this.failures, retryInMs });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.stopped) this.dial();
    }, retryInMs);
  }

  private setState(state: ConnectionState): void {
    this.options.onState?.(state);
  }
}

function unreachable(): RequestError {
  return new RequestError("unreachable", "The Carrier server cannot be reached. Check your connection; Carrier keeps trying.");
}
