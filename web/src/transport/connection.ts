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
  ) {
    super(message);
    this.name = "RequestError";
  }
}

/** Request sender handed to `onOpen`: it goes out before the connection counts as open. */
export type Requester = (type: string, fields?: Frame) => Promise<Frame>;

export interface TransportOptions {
  url: string;
  /** Runs after every (re)connect, before waiting requests go out; a throw drops the connection. */
  onOpen?: (request: Requester) => Promise<void>;
  /** Pushed frames: `message`, `broadcast`, and errors tied to no request. */
  onEvent?: (frame: Frame) => void;
  onState?: (state: ConnectionState) => void;
  connect?: (url: string) => SocketLike;
  random?: () => number;
  requestTimeoutMs?: number;
  pingIntervalMs?: number;
}

/** Limits from docs/PROTOCOL.md §3 and the reconnection rule of §19.11, scaled for a person waiting. */
export const MAX_REQUEST_FRAME = 131_072;
export const FIRST_RETRY_MS = 250;
export const LONGEST_RETRY_MS = 30_000;
export const STABLE_CONNECTION_MS = 5_000;

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
  private readonly options: Required<Omit<TransportOptions, "onOpen" | "onEvent" | "onState">> & TransportOptions;

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
    const deadline = Date.now() + this.options.requestTimeoutMs;
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
    socket.onmessage = (ev) => this.receive(ev.data);
    socket.onerror = () => socket.close();
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.drop(new RequestError("disconnected", "The connection dropped; try again."));
      if (!this.stopped) this.scheduleRetry();
    };
    socket.onopen = () => void this.opened(socket);
  }

  private async opened(socket: SocketLike): Promise<void> {
    this.openedAt = Date.now();
    try {
      await this.options.onOpen?.((type, fields = {}) => this.send(type, fields));
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

  private receive(data: unknown): void {
    let frame: Frame;
    try {
      frame = JSON.parse(String(data)) as Frame;
    } catch {
      return; // the server only sends JSON; anything else is noise on the wire
    }
    if (typeof frame !== "object" || frame === null) return;
    const re = frame.re;
    if (typeof re !== "number") {
      this.options.onEvent?.(frame);
      return;
    }
    const pending = this.pending.get(re);
    if (!pending) return;
    this.pending.delete(re);
    clearTimeout(pending.timer);
    if (frame.type === "error") {
      pending.reject(new RequestError(String(frame.code ?? "internal"), String(frame.message ?? "The server refused the request.")));
    } else {
      pending.resolve(frame);
    }
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
