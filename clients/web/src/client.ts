/**
 * `PgpulseClient`: one WebSocket subscription to a pgpulse server that
 * survives drops, restarts and token expiry without losing or repeating an
 * event.
 *
 * Exactness rests on the server's ids: on one connection they strictly
 * increase, and `last_event_id=N` makes the server send every retained event
 * after N before anything live. So the client keeps one number, the highest
 * id it has delivered (or the `ready` frame's position, which also counts
 * events the server skipped for this connection's filters), and reconnects
 * from it. Anything at or below it is dropped, so even a misbehaving proxy
 * that replays frames cannot make an application see an event twice.
 *
 * What the client does on each way a connection ends:
 * - 1008 before `ready` (or a handshake answered 401/403): the token or a
 *   topic was refused. Retrying with the same token would be refused again,
 *   so the client stops, unless `token` is a function: then it retries after
 *   a back-off delay with the token the function returns, and stops if that
 *   is the token just refused.
 * - 1012 (server restart), 1013 (slow consumer, database away), 1006 (the
 *   network), anything else: reconnect after an exponential delay with
 *   jitter, and resume.
 * - 1008 "token expired" after `ready`: the token ran out; with a function
 *   the client reconnects with a fresh one. But it rarely comes to that: when
 *   `token` is a function the client asks it for a new token ahead of each
 *   token's `exp` and hands it to the server in band
 *   (`{"op": "refresh", "token": ...}`), so the connection stays up.
 * - Silence: browsers do not expose protocol pings, so the client sends
 *   `{"op": "ping"}` after a quiet spell and gives the connection up when
 *   nothing answers in time. A socket on a dead network can stay "open" for
 *   minutes otherwise.
 */

import { Backoff, type BackoffOptions } from "./backoff.js";
import {
  parseFrame,
  PING_FRAME,
  WS_1000_NORMAL_CLOSURE,
  WS_1006_ABNORMAL_CLOSURE,
  WS_1008_POLICY_VIOLATION,
  WS_4000_CLIENT_TIMEOUT,
  type ControlFrame,
  type PgpulseEvent,
  type ResetReason,
} from "./protocol.js";
import { refreshDelay, resolveToken, type TokenSource } from "./token.js";

/**
 * Where the client stands.
 * - `idle`: created with `autoConnect: false` and not started yet.
 * - `connecting`: the first connection is being made (or replaying).
 * - `open`: the subscription is live (the server sent `ready`).
 * - `reconnecting`: the connection was lost; a new one is waiting or being made.
 * - `unauthorized`, `forbidden`: the server refused the token or a topic; the client stopped.
 * - `closed`: `close()` was called.
 */
export type Status =
  | "idle"
  | "connecting"
  | "open"
  | "reconnecting"
  | "unauthorized"
  | "forbidden"
  | "closed";

// Handler properties are declared bivariant, as the DOM's are in practice, so
// both the browser's WebSocket and the `ws` package satisfy WebSocketLike.
type Handler<E> = { bivarianceHack(event: E): void }["bivarianceHack"];

/** The part of the WebSocket API the client uses: the browser's, or `ws`'s in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ readonly data: unknown }> | null;
  onerror: Handler<unknown> | null;
  onclose: Handler<{ readonly code: number; readonly reason: string }> | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface PgpulseClientOptions {
  /** The server's base URL, e.g. `https://events.example.com` (http(s) or ws(s); relative in a browser). */
  readonly url: string;
  /** A JWT, or a function returning one; a function lets a refused or expired token be replaced. */
  readonly token: TokenSource;
  /** Topics to receive; default: every topic the token allows. */
  readonly topics?: readonly string[];
  /** Resume after this id (e.g. one the app persisted); default: from now. */
  readonly lastEventId?: number;
  /** The WebSocket path on the server. Default `/ws`. */
  readonly path?: string;
  readonly backoff?: BackoffOptions;
  /** Quiet time after which the client sends a ping, in milliseconds. Default 20000. */
  readonly pingIntervalMs?: number;
  /** How long a ping (or a new socket) may go unanswered before the connection is given up, in milliseconds. Default 10000. */
  readonly pongTimeoutMs?: number;
  /** The WebSocket implementation; default the global one. Node 20 has none: pass the `ws` package's. */
  readonly WebSocket?: WebSocketConstructor;
  /** Connect at construction. Default true; otherwise call `connect()`. */
  readonly autoConnect?: boolean;
}

/** Narrows which events a listener receives. */
export interface EventFilter {
  readonly topic?: string;
  readonly type?: string;
}

/** Why a connection ended, and what the client does next. */
export interface Disconnect {
  readonly code: number;
  readonly reason: string;
  /** Milliseconds until the next attempt, or null when the client stopped. */
  readonly retryInMs: number | null;
}

/** Something went wrong that the application may want to log; the client carries on. */
export class PgpulseClientError extends Error {
  override readonly name = "PgpulseClientError";
  constructor(
    message: string,
    /** `server`: the server's error frame; `token`: the token provider failed; `frame`: an unreadable frame; `socket`: the WebSocket could not be created. */
    readonly kind: "server" | "token" | "frame" | "socket",
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What each kind of listener receives. */
export interface ClientEvents {
  event: PgpulseEvent;
  status: Status;
  /** The subscription is live; `lastEventId` is the resume point from here on. */
  ready: { readonly lastEventId: number };
  /** The server could not resume: reload the application's state, then carry on with the stream. */
  reset: { readonly reason: ResetReason };
  disconnect: Disconnect;
  error: PgpulseClientError;
}

export type ClientEventKind = keyof ClientEvents;
export type Unsubscribe = () => void;

const DEFAULT_PATH = "/ws";
const DEFAULT_PING_INTERVAL_MS = 20_000;
const DEFAULT_PONG_TIMEOUT_MS = 10_000;
const SOCKET_OPEN = 1; // WebSocket.OPEN, the same in every implementation

type Listener<K extends ClientEventKind> = (value: ClientEvents[K]) => void;
type EventEntry = { readonly listener: (event: PgpulseEvent) => void; readonly filter?: EventFilter };
type Refusal = "unauthorized" | "forbidden";

export class PgpulseClient {
  readonly #options: PgpulseClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  readonly #backoff: Backoff;
  readonly #eventListeners = new Set<EventEntry>();
  readonly #listeners: { [K in Exclude<ClientEventKind, "event">]: Set<Listener<K>> } = {
    status: new Set(),
    ready: new Set(),
    reset: new Set(),
    disconnect: new Set(),
    error: new Set(),
  };

  #status: Status = "idle";
  #cursor: number | undefined;
  #socket: WebSocketLike | null = null;
  // Bumped by every attempt and by close(): an async step that finds it
  // changed belongs to an attempt that was abandoned, and does nothing.
  #generation = 0;
  #retryTimer: ReturnType<typeof setTimeout> | null = null;
  #pingTimer: ReturnType<typeof setTimeout> | null = null;
  #deadlineTimer: ReturnType<typeof setTimeout> | null = null;
  #refreshTimer: ReturnType<typeof setTimeout> | null = null;
  /** The token the current connection is living on (the last one the server accepted). */
  #token: string | null = null;
  #wasLive = false;
  #resetPending = false;
  #refused: { readonly token: string; readonly status: Refusal } | null = null;

  constructor(options: PgpulseClientOptions) {
    const WebSocketImpl = options.WebSocket ?? globalWebSocket();
    if (WebSocketImpl === undefined) {
      throw new TypeError(
        "no WebSocket implementation: this runtime has no global WebSocket; pass one as options.WebSocket (e.g. the ws package's)",
      );
    }
    if (options.lastEventId !== undefined && !(Number.isSafeInteger(options.lastEventId) && options.lastEventId >= 0)) {
      throw new RangeError(`lastEventId must be a non-negative integer, got ${String(options.lastEventId)}`);
    }
    this.#options = options;
    this.#WebSocket = WebSocketImpl;
    this.#backoff = new Backoff(options.backoff);
    this.#cursor = options.lastEventId;
    endpoint(options, "", undefined); // reject a malformed URL now, not on the first attempt
    if (options.autoConnect !== false) {
      this.connect();
    }
  }

  get status(): Status {
    return this.#status;
  }

  /** The resume point: the newest id delivered or skipped; undefined before the first `ready` unless given. */
  get lastEventId(): number | undefined {
    return this.#cursor;
  }

  /**
   * Connect now: starts an idle client, restarts one that stopped (refused or
   * closed), or cuts a back-off wait short (e.g. when the browser comes back
   * online). Does nothing while a connection is being made or is open.
   */
  connect(): void {
    if (this.#socket !== null) {
      return;
    }
    this.#clearRetry();
    if (this.#status === "unauthorized" || this.#status === "forbidden" || this.#status === "closed") {
      // An explicit call is the application saying it has new credentials.
      this.#refused = null;
      this.#wasLive = false;
      this.#backoff.reset();
    }
    void this.#attempt();
  }

  /** Stop for good (until `connect()`): closes the socket, cancels timers, keeps the resume point. */
  close(): void {
    this.#generation += 1;
    this.#clearRetry();
    this.#dropSocket(WS_1000_NORMAL_CLOSURE, "client closed");
    this.#setStatus("closed");
  }

  /**
   * Listen. `on("event", fn, { type: "notification" })` receives only matching
   * events; the other kinds receive every occurrence. Returns a function that
   * removes the listener. `TData` types `event.data` without checking it.
   */
  on<TData = unknown>(kind: "event", listener: (event: PgpulseEvent<TData>) => void, filter?: EventFilter): Unsubscribe;
  on<K extends Exclude<ClientEventKind, "event">>(kind: K, listener: Listener<K>): Unsubscribe;
  on(kind: ClientEventKind, listener: (value: never) => void, filter?: EventFilter): Unsubscribe {
    if (kind === "event") {
      const entry: EventEntry = { listener: listener as (event: PgpulseEvent) => void, filter };
      this.#eventListeners.add(entry);
      return () => this.#eventListeners.delete(entry);
    }
    const set = this.#listeners[kind] as Set<(value: never) => void>;
    set.add(listener);
    return () => set.delete(listener);
  }

  async #attempt(): Promise<void> {
    const generation = ++this.#generation;
    let token: string;
    try {
      token = await resolveToken(this.#options.token);
    } catch (cause) {
      if (generation !== this.#generation) return;
      this.#emit("error", new PgpulseClientError(`token provider failed: ${describe(cause)}`, "token", { cause }));
      this.#setStatus(this.#wasLive || this.#backoff.attempt > 0 ? "reconnecting" : "connecting");
      this.#scheduleRetry();
      return;
    }
    if (generation !== this.#generation) return;
    if (this.#refused !== null && this.#refused.token === token) {
      // The server refused this very token: asking again would only be refused again.
      this.#setStatus(this.#refused.status);
      return;
    }
    this.#setStatus(this.#wasLive || this.#backoff.attempt > 0 ? "reconnecting" : "connecting");

    let socket: WebSocketLike;
    try {
      socket = new this.#WebSocket(endpoint(this.#options, token, this.#cursor));
    } catch (cause) {
      this.#emit("error", new PgpulseClientError(`cannot open a WebSocket: ${describe(cause)}`, "socket", { cause }));
      this.#scheduleRetry();
      return;
    }
    this.#socket = socket;
    this.#token = token;
    this.#resetPending = false;
    let live = false;
    let handshakeRefusal: Refusal | null = null;

    socket.onopen = () => {
      if (socket === this.#socket) this.#armKeepalive(socket);
    };
    socket.onmessage = (message) => {
      if (socket !== this.#socket) return;
      this.#armKeepalive(socket);
      if (typeof message.data !== "string") {
        this.#emit("error", new PgpulseClientError("binary frame ignored: the server sends JSON text", "frame"));
        return;
      }
      const control = this.#receive(message.data);
      if (control?.op === "ready") {
        live = true;
        this.#armRefresh(socket);
      } else if (control?.op === "refreshed") {
        this.#armRefresh(socket);
      }
    };
    socket.onerror = (event) => {
      // Only Node's `ws` says why a handshake failed; a browser reports a
      // refused handshake as a bare 1006, indistinguishable from the network.
      handshakeRefusal = refusalOfHandshake(event) ?? handshakeRefusal;
    };
    socket.onclose = ({ code, reason }) => {
      if (socket !== this.#socket) return;
      this.#socket = null;
      this.#clearKeepalive();
      this.#clearRefresh();
      const refusal = handshakeRefusal ?? (code === WS_1008_POLICY_VIOLATION && !live ? refusalOf(reason) : null);
      this.#afterClose(code, reason, refusal === null ? null : { token, status: refusal });
    };
    this.#armDeadline(socket);
  }

  #receive(text: string): ControlFrame | null {
    const frame = parseFrame(text);
    if (frame.kind === "unknown") {
      this.#emit("error", new PgpulseClientError(`frame ignored: ${frame.reason}`, "frame"));
      return null;
    }
    if (frame.kind === "event") {
      const { event } = frame;
      if (this.#cursor !== undefined && event.id <= this.#cursor) {
        return null; // already delivered: the guard that makes a duplicate impossible
      }
      this.#cursor = event.id;
      for (const entry of [...this.#eventListeners]) {
        if (matches(event, entry.filter)) this.#call(entry.listener, event);
      }
      return null;
    }
    const { control } = frame;
    switch (control.op) {
      case "ready":
        // After a reset the old position means nothing (the database may have
        // been replaced and count from 1 again), so `ready` replaces it.
        this.#cursor =
          this.#resetPending || this.#cursor === undefined
            ? control.last_event_id
            : Math.max(this.#cursor, control.last_event_id);
        this.#resetPending = false;
        this.#wasLive = true;
        this.#refused = null;
        this.#backoff.reset();
        this.#setStatus("open");
        this.#emit("ready", { lastEventId: this.#cursor });
        break;
      case "reset":
        this.#resetPending = true;
        this.#emit("reset", { reason: control.reason });
        break;
      case "error":
        this.#emit("error", new PgpulseClientError(`server: ${control.message}`, "server"));
        break;
      case "pong":
      case "refreshed":
        break;
    }
    return control;
  }

  #afterClose(code: number, reason: string, refused: { token: string; status: Refusal } | null): void {
    if (refused !== null) {
      this.#refused = refused;
      // Only a function can come up with another token; a fixed one stops here.
      const retryInMs = typeof this.#options.token === "function" ? this.#scheduleRetry() : null;
      this.#setStatus(refused.status);
      this.#emit("disconnect", { code, reason, retryInMs });
      return;
    }
    const retryInMs = this.#scheduleRetry();
    this.#setStatus("reconnecting");
    this.#emit("disconnect", { code, reason, retryInMs });
  }

  #scheduleRetry(): number {
    this.#clearRetry();
    const delay = this.#backoff.next();
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      void this.#attempt();
    }, delay);
    return delay;
  }

  #clearRetry(): void {
    if (this.#retryTimer !== null) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
  }

  /**
   * With a token function, ask it for a new token ahead of the current one's
   * `exp` and send it in band; the server answers `refreshed` (which arms the
   * next round) or an error, and then closes at `exp`, which reconnects.
   */
  #armRefresh(socket: WebSocketLike): void {
    this.#clearRefresh();
    const source = this.#options.token;
    const current = this.#token;
    if (typeof source !== "function" || current === null) return;
    const delay = refreshDelay(current);
    if (delay === undefined) return;
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = null;
      void resolveToken(source).then(
        (token) => {
          if (socket !== this.#socket || socket.readyState !== SOCKET_OPEN) return;
          this.#token = token;
          socket.send(JSON.stringify({ op: "refresh", token }));
        },
        (cause: unknown) => {
          this.#emit("error", new PgpulseClientError(`token provider failed: ${describe(cause)}`, "token", { cause }));
        },
      );
    }, delay);
  }

  #clearRefresh(): void {
    if (this.#refreshTimer !== null) {
      clearTimeout(this.#refreshTimer);
      this.#refreshTimer = null;
    }
  }

  /** Every frame restarts the quiet timer; a ping goes out when it runs out. */
  #armKeepalive(socket: WebSocketLike): void {
    this.#clearKeepalive();
    const interval = this.#options.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS;
    this.#pingTimer = setTimeout(() => {
      this.#pingTimer = null;
      if (socket.readyState === SOCKET_OPEN) socket.send(PING_FRAME);
      this.#armDeadline(socket);
    }, interval);
  }

  /** Give the socket up when nothing arrives in time (the pong, or the opening of a new socket). */
  #armDeadline(socket: WebSocketLike): void {
    const timeout = this.#options.pongTimeoutMs ?? DEFAULT_PONG_TIMEOUT_MS;
    this.#deadlineTimer = setTimeout(() => {
      this.#deadlineTimer = null;
      if (socket !== this.#socket) return;
      this.#dropSocket(WS_4000_CLIENT_TIMEOUT, "no frame within the pong timeout");
      this.#afterClose(WS_1006_ABNORMAL_CLOSURE, `no frame for ${timeout} ms`, null);
    }, timeout);
  }

  #clearKeepalive(): void {
    if (this.#pingTimer !== null) clearTimeout(this.#pingTimer);
    if (this.#deadlineTimer !== null) clearTimeout(this.#deadlineTimer);
    this.#pingTimer = this.#deadlineTimer = null;
  }

  /** Forget the current socket: its late events are ignored, and it is closed if it still can be. */
  #dropSocket(code: number, reason: string): void {
    const socket = this.#socket;
    this.#socket = null;
    this.#clearKeepalive();
    this.#clearRefresh();
    if (socket === null) return;
    socket.onopen = socket.onmessage = socket.onclose = null;
    // A `ws` socket closed while connecting reports an error; with no handler Node would throw it.
    socket.onerror = () => {};
    try {
      socket.close(code, reason);
    } catch {
      // Already closing or closed: nothing left to release.
    }
  }

  #setStatus(status: Status): void {
    if (status === this.#status) return;
    this.#status = status;
    this.#emit("status", status);
  }

  #emit<K extends Exclude<ClientEventKind, "event">>(kind: K, value: ClientEvents[K]): void {
    for (const listener of [...this.#listeners[kind]]) {
      this.#call(listener, value);
    }
  }

  /** A throwing listener must not leave the client half-way through a frame; its error is rethrown on its own. */
  #call<T>(listener: (value: T) => void, value: T): void {
    try {
      listener(value);
    } catch (error) {
      setTimeout(() => {
        throw error;
      }, 0);
    }
  }
}

/** The `/ws` URL of one attempt: token, topics and resume point go in the query, the only place a browser can put them. */
function endpoint(options: PgpulseClientOptions, token: string, lastEventId: number | undefined): string {
  const base = new URL(options.url, typeof location === "undefined" ? undefined : location.href);
  if (base.protocol === "http:") base.protocol = "ws:";
  else if (base.protocol === "https:") base.protocol = "wss:";
  else if (base.protocol !== "ws:" && base.protocol !== "wss:") {
    throw new TypeError(`url must be http(s) or ws(s), got ${JSON.stringify(options.url)}`);
  }
  base.pathname = base.pathname.replace(/\/+$/, "") + (options.path ?? DEFAULT_PATH);
  base.search = "";
  base.hash = "";
  base.searchParams.set("token", token);
  if (options.topics !== undefined && options.topics.length > 0) {
    base.searchParams.set("topics", options.topics.join(","));
  }
  if (lastEventId !== undefined) {
    base.searchParams.set("last_event_id", String(lastEventId));
  }
  return base.toString();
}

function matches(event: PgpulseEvent, filter: EventFilter | undefined): boolean {
  return (
    filter === undefined ||
    ((filter.topic === undefined || filter.topic === event.topic) && (filter.type === undefined || filter.type === event.type))
  );
}

/** The server closes with 1008 and says which: a topic outside the token's, or the token itself. */
function refusalOf(reason: string): Refusal {
  return /topic/i.test(reason) ? "forbidden" : "unauthorized";
}

function refusalOfHandshake(event: unknown): Refusal | null {
  const message = typeof event === "object" && event !== null && "message" in event ? event.message : undefined;
  if (typeof message !== "string") return null;
  const status = /Unexpected server response: (\d{3})/.exec(message)?.[1];
  return status === "401" ? "unauthorized" : status === "403" ? "forbidden" : null;
}

function globalWebSocket(): WebSocketConstructor | undefined {
  return typeof WebSocket === "undefined" ? undefined : WebSocket;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
