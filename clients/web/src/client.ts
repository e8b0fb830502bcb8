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
 *
 * Topics change on the open socket (`subscribe`, `unsubscribe`, `setTopics`):
 * the server merges a new topic's catch-up into the stream by id, so the one
 * cursor stays exact. The client's topic list changes at once, so a
 * reconnect in the middle asks for the new list in its URL.
 */

import { Backoff, type BackoffOptions } from "./backoff.js";
import {
  parseFrame,
  PING_FRAME,
  type Ref,
  type WireMember,
  WS_1000_NORMAL_CLOSURE,
  WS_1006_ABNORMAL_CLOSURE,
  WS_1008_POLICY_VIOLATION,
  WS_4000_CLIENT_TIMEOUT,
  type ControlFrame,
  type PgpulseEvent,
  type ResetReason,
} from "./protocol.js";
import type { HttpOptions } from "./http.js";
import { refreshDelay, resolveOptionalToken, resolveToken, type TokenSource } from "./token.js";

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
  /**
   * A JWT, or a function returning one; a function lets a refused or expired
   * token be replaced. None: the page's cookies authenticate the WebSocket
   * (an app that embeds pgpulse on its own origin); a refusal then stops the
   * client until `connect()`, e.g. after the user signs in again.
   */
  readonly token?: TokenSource;
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

/** The server's answer to `subscribe` or `unsubscribe`. */
export interface TopicsAnswer {
  /** The topics the request named. */
  readonly topics: readonly string[];
  /**
   * After `subscribe`: the new topics' events after this id come on this
   * connection (read older ones with `listEvents`). After `unsubscribe`: their
   * events up to this id may have come, none after it. `null` when no socket
   * was open: the change applies to the next connection, which resumes from
   * `lastEventId` for every topic.
   */
  readonly lastEventId: number | null;
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
  /** A joined topic's members changed (its whole state, after each change). */
  presence: PresenceState;
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
/** A request sent with a `ref`, waiting for the answer that carries it. */
interface PendingRequest {
  readonly frame: { readonly op: string; readonly ref: number; readonly [field: string]: unknown };
  /** The server's answer, or null when the socket went away before it came. */
  readonly answer: (control: ControlFrame | null) => void;
  /** The server refused it (an `error` frame). */
  readonly refuse: (error: PgpulseClientError) => void;
}

/** One member of a topic's presence. */
export interface PresenceMember<TInfo = unknown> {
  /** The member's id: one per connection. */
  readonly id: string;
  /** The user of its token (`sub`), verified by the server; null without one. */
  readonly userId: string | null;
  /** What the member's client said about itself (not verified), or null. */
  readonly info: TInfo | null;
  /** ISO-8601 time it joined. */
  readonly joinedAt: string;
}

/** A topic's presence as this client knows it. */
export interface PresenceState<TInfo = unknown> {
  readonly topic: string;
  /** In the order they joined. */
  readonly members: readonly PresenceMember<TInfo>[];
  /** This client's own member id, once the server has answered its join. */
  readonly self: string | null;
}

interface JoinedTopic {
  info: unknown;
  members: Map<string, PresenceMember>;
  self: string | null;
}

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
    presence: new Set(),
  };

  #status: Status = "idle";
  #cursor: number | undefined;
  #topics: readonly string[] | undefined;
  #nextRef = 1;
  /** Sent, waiting for the server's answer, by ref. */
  readonly #requests = new Map<number, PendingRequest>();
  /** Waiting for the socket being opened. */
  #unsent: PendingRequest[] = [];
  /** The topics whose presence it joined: joined again on every new connection. */
  readonly #joined = new Map<string, JoinedTopic>();
  /** The socket has said `ready`: requests go straight to it. */
  #live = false;
  #socket: WebSocketLike | null = null;
  // Bumped by every attempt and by close(): an async step that finds it
  // changed belongs to an attempt that was abandoned, and does nothing.
  #generation = 0;
  #retryTimer: ReturnType<typeof setTimeout> | null = null;
  #pingTimer: ReturnType<typeof setTimeout> | null = null;
  #deadlineTimer: ReturnType<typeof setTimeout> | null = null;
  #refreshTimer: ReturnType<typeof setTimeout> | null = null;
  /** The token the current connection is living on (the last one the server accepted). */
  #token: string | undefined;
  #wasLive = false;
  #resetPending = false;
  #refused: { readonly token: string | undefined; readonly status: Refusal } | null = null;

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
    this.#topics = options.topics === undefined || options.topics.length === 0 ? undefined : checkTopics(options.topics);
    endpoint(options, undefined, this.#topics, undefined); // reject a malformed URL now, not on the first attempt
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

  /** Its server and token, for the HTTP helpers: `getJob({ ...client.http, jobId })`. */
  get http(): HttpOptions {
    return { url: this.#options.url, token: this.#options.token };
  }

  /** The topics it reads: undefined means every topic the token allows. */
  get topics(): readonly string[] | undefined {
    return this.#topics;
  }

  /**
   * Add topics on the open socket, without reconnecting. Their events come
   * from now, or with `lastEventId` from after it (but never before events
   * the socket has already delivered, which would break the id order: read
   * those with `listEvents`). Resolves with the server's answer; rejects when
   * it refuses (a topic the token does not allow), and the topics stay as
   * they were. A client of every topic already has them all.
   */
  subscribe(topics: readonly string[], options: { readonly lastEventId?: number } = {}): Promise<TopicsAnswer> {
    const wanted = checkTopics(topics);
    const { lastEventId } = options;
    if (lastEventId !== undefined && !(Number.isSafeInteger(lastEventId) && lastEventId >= 0)) {
      throw new RangeError(`lastEventId must be a non-negative integer, got ${String(lastEventId)}`);
    }
    const before = this.#topics;
    const added = before === undefined ? [] : wanted.filter((topic) => !before.includes(topic));
    if (before !== undefined) this.#topics = [...before, ...added];
    const undo = (): void => {
      if (this.#topics !== undefined) this.#topics = this.#topics.filter((topic) => !added.includes(topic));
    };
    const frame = { op: "subscribe", topics: wanted, ...(lastEventId === undefined ? {} : { last_event_id: lastEventId }) };
    return this.#topicRequest(frame, wanted, undo);
  }

  /** Drop topics on the open socket, without reconnecting. Needs a client created with `topics`. */
  unsubscribe(topics: readonly string[]): Promise<TopicsAnswer> {
    const dropped = checkTopics(topics);
    const before = this.#topics;
    if (before === undefined) {
      return Promise.reject(
        new RangeError("this client reads every topic the token allows: create it with topics to drop some later"),
      );
    }
    const removed = before.filter((topic) => dropped.includes(topic));
    this.#topics = before.filter((topic) => !dropped.includes(topic));
    const undo = (): void => {
      if (this.#topics !== undefined) this.#topics = [...this.#topics, ...removed.filter((t) => !this.#topics?.includes(t))];
    };
    return this.#topicRequest({ op: "unsubscribe", topics: dropped }, dropped, undo);
  }

  /**
   * Read exactly `topics` from now on (undefined: every topic the token
   * allows): subscribes and unsubscribes the difference on the open socket.
   * Only a change to or from "every topic" reconnects (resuming exactly).
   */
  async setTopics(topics: readonly string[] | undefined): Promise<void> {
    const wanted = topics === undefined || topics.length === 0 ? undefined : checkTopics(topics);
    const current = this.#topics;
    if (sameTopics(current, wanted)) return;
    if (current === undefined || wanted === undefined) {
      this.#topics = wanted;
      if (this.#socket !== null) {
        this.#dropSocket(WS_1000_NORMAL_CLOSURE, "topics changed");
        void this.#attempt();
      }
      return;
    }
    const add = wanted.filter((topic) => !current.includes(topic));
    const drop = current.filter((topic) => !wanted.includes(topic));
    await Promise.all([
      drop.length > 0 ? this.unsubscribe(drop) : undefined,
      add.length > 0 ? this.subscribe(add) : undefined,
    ]);
  }

  /**
   * Be present in `topic` (`info`: what others see of this client, any JSON
   * up to the server's limit, 1 KiB by default) until `leavePresence`; joining
   * again updates `info`. Presence belongs to a connection, so the client
   * joins again on every new one. Its members come in `presence` events and
   * from `presence(topic)`. Rejects when the server refuses (a topic the token
   * does not allow, a full topic, `info` too big), and the topic is not joined.
   */
  joinPresence(topic: string, info?: unknown): Promise<void> {
    const [name] = checkTopics([topic]);
    const joined = this.#joined.get(topic);
    if (joined === undefined) this.#joined.set(topic, { info, members: new Map(), self: null });
    else joined.info = info;
    if (!this.#live) return Promise.resolve(); // joined once the connection is live
    return new Promise((resolve, reject) => {
      this.#request(this.#socket, presenceJoinFrame(name ?? topic, info), {
        answer: () => resolve(),
        refuse: (error) => {
          if (joined === undefined) this.#joined.delete(topic);
          reject(error);
        },
      });
    });
  }

  /** Stop being present in `topic`. */
  leavePresence(topic: string): Promise<void> {
    if (!this.#joined.delete(topic) || !this.#live) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#request(this.#socket, { op: "presence.leave", topic }, { answer: () => resolve(), refuse: reject });
    });
  }

  /** The members of `topic` now, asked of the server (joined or not). */
  getPresence<TInfo = unknown>(topic: string): Promise<readonly PresenceMember<TInfo>[]> {
    checkTopics([topic]);
    if (this.#socket === null) return Promise.reject(new PgpulseClientError("not connected", "socket"));
    return new Promise((resolve, reject) => {
      this.#request(this.#socket, { op: "presence.get", topic }, {
        answer: (control) =>
          control?.op === "presence"
            ? resolve(control.members.map(memberFromWire) as PresenceMember<TInfo>[])
            : reject(new PgpulseClientError("the connection closed before the server answered", "socket")),
        refuse: reject,
      });
    });
  }

  /** A joined topic's members, as this client knows them; undefined for a topic it did not join. */
  presence<TInfo = unknown>(topic: string): PresenceState<TInfo> | undefined {
    const joined = this.#joined.get(topic);
    return joined === undefined ? undefined : presenceState(topic, joined) as PresenceState<TInfo>;
  }

  #topicRequest(
    frame: { readonly op: string; readonly topics: readonly string[] },
    topics: readonly string[],
    undo: () => void,
  ): Promise<TopicsAnswer> {
    if (this.#socket === null) return Promise.resolve({ topics, lastEventId: null });
    return new Promise((resolve, reject) => {
      this.#request(this.#socket, frame, {
        answer: (control) =>
          resolve(
            control !== null && (control.op === "subscribed" || control.op === "unsubscribed")
              ? { topics: control.topics, lastEventId: control.last_event_id }
              : { topics, lastEventId: null },
          ),
        refuse: (error) => {
          undo();
          reject(error);
        },
      });
    });
  }

  /** Send `frame` with a new ref on `socket` (once it is open), and route its answer. */
  #request(
    socket: WebSocketLike | null,
    frame: { readonly op: string; readonly [field: string]: unknown },
    handlers: Pick<PendingRequest, "answer" | "refuse">,
  ): void {
    const request: PendingRequest = { frame: { ...frame, ref: this.#nextRef++ }, ...handlers };
    if (socket === null) request.answer(null);
    else if (socket.readyState === SOCKET_OPEN) this.#send(socket, request);
    else this.#unsent.push(request);
  }

  #send(socket: WebSocketLike, request: PendingRequest): void {
    this.#requests.set(request.frame.ref, request);
    socket.send(JSON.stringify(request.frame));
  }

  /** The socket is gone: what was asked of it applies to the next one (its URL, its joins). */
  #settleRequests(): void {
    const requests = [...this.#requests.values(), ...this.#unsent];
    this.#requests.clear();
    this.#unsent = [];
    for (const request of requests) request.answer(null);
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
    let token: string | undefined;
    try {
      token = await resolveOptionalToken(this.#options.token);
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
      socket = new this.#WebSocket(endpoint(this.#options, token, this.#topics, this.#cursor));
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
      if (socket !== this.#socket) return;
      this.#armKeepalive(socket);
      const unsent = this.#unsent;
      this.#unsent = [];
      for (const request of unsent) this.#send(socket, request);
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
      this.#live = false;
      this.#clearKeepalive();
      this.#clearRefresh();
      this.#settleRequests();
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
        this.#live = true;
        this.#rejoin();
        this.#emit("ready", { lastEventId: this.#cursor });
        break;
      case "reset":
        this.#resetPending = true;
        this.#emit("reset", { reason: control.reason });
        break;
      case "error": {
        const error = new PgpulseClientError(`server: ${control.message}`, "server");
        this.#answered(control.ref)?.refuse(error);
        this.#emit("error", error);
        break;
      }
      case "subscribed":
      case "unsubscribed":
        this.#answered(control.ref)?.answer(control);
        break;
      case "presence": {
        const joined = control.self === undefined ? undefined : this.#joined.get(control.topic);
        if (joined !== undefined) {
          joined.members = new Map(control.members.map((member) => [member.id, memberFromWire(member)]));
          joined.self = control.self ?? null;
          this.#emit("presence", presenceState(control.topic, joined));
        }
        this.#answered(control.ref)?.answer(control);
        break;
      }
      case "presence.joined":
      case "presence.left": {
        const answer = this.#answered(control.ref);
        if (answer !== undefined) {
          answer.answer(control); // the answer to our own leave
          break;
        }
        const joined = this.#joined.get(control.topic);
        if (joined === undefined) break;
        if (control.op === "presence.left" && control.member.id === joined.self) {
          // The server took this connection out (a refreshed token dropped the topic):
          // not present any more, and not to be joined again on a reconnect.
          this.#joined.delete(control.topic);
          this.#emit("presence", { topic: control.topic, members: [], self: null });
          break;
        }
        if (control.op === "presence.joined") joined.members.set(control.member.id, memberFromWire(control.member));
        else joined.members.delete(control.member.id);
        this.#emit("presence", presenceState(control.topic, joined));
        break;
      }
      case "refreshed":
        // A token with fewer topics narrowed the connection: reconnect with those, not
        // with topics the new token would refuse.
        if (control.topics !== undefined && this.#topics !== undefined) {
          const allowed = control.topics;
          const kept = this.#topics.filter((topic) => allowed.includes(topic));
          if (kept.length > 0) this.#topics = kept;
        }
        break;
      case "pong":
        break;
    }
    return control;
  }

  #answered(ref: Ref | undefined): PendingRequest | undefined {
    if (typeof ref !== "number") return undefined;
    const request = this.#requests.get(ref);
    this.#requests.delete(ref);
    return request;
  }

  /** Presence belongs to a connection: a new one joins every topic the client is present in. */
  #rejoin(): void {
    for (const [topic, joined] of this.#joined) {
      this.#request(this.#socket, presenceJoinFrame(topic, joined.info), {
        answer: () => undefined,
        refuse: () => this.#joined.delete(topic), // reported on the "error" listeners
      });
    }
  }

  #afterClose(code: number, reason: string, refused: { token: string | undefined; status: Refusal } | null): void {
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
    if (typeof source !== "function" || current === undefined) return;
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
    this.#live = false;
    this.#clearKeepalive();
    this.#clearRefresh();
    this.#settleRequests();
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
function endpoint(
  options: PgpulseClientOptions,
  token: string | undefined,
  topics: readonly string[] | undefined,
  lastEventId: number | undefined,
): string {
  const base = new URL(options.url, typeof location === "undefined" ? undefined : location.href);
  if (base.protocol === "http:") base.protocol = "ws:";
  else if (base.protocol === "https:") base.protocol = "wss:";
  else if (base.protocol !== "ws:" && base.protocol !== "wss:") {
    throw new TypeError(`url must be http(s) or ws(s), got ${JSON.stringify(options.url)}`);
  }
  base.pathname = base.pathname.replace(/\/+$/, "") + (options.path ?? DEFAULT_PATH);
  base.search = "";
  base.hash = "";
  if (token !== undefined) base.searchParams.set("token", token);
  if (topics !== undefined && topics.length > 0) {
    base.searchParams.set("topics", topics.join(","));
  }
  if (lastEventId !== undefined) {
    base.searchParams.set("last_event_id", String(lastEventId));
  }
  return base.toString();
}

function memberFromWire(member: WireMember): PresenceMember {
  return { id: member.id, userId: member.user_id ?? null, info: member.info ?? null, joinedAt: member.joined_at ?? "" };
}

function presenceState(topic: string, joined: JoinedTopic): PresenceState {
  return { topic, members: [...joined.members.values()], self: joined.self };
}

function presenceJoinFrame(topic: string, info: unknown): { readonly op: string; readonly [field: string]: unknown } {
  return info === undefined ? { op: "presence.join", topic } : { op: "presence.join", topic, info };
}

/** Topic names as the server takes them: non-empty strings, no commas (the URL joins them with commas). */
function checkTopics(topics: readonly string[]): string[] {
  if (!Array.isArray(topics) || topics.length === 0) {
    throw new TypeError("topics must be a non-empty array of topic names");
  }
  for (const topic of topics) {
    if (typeof topic !== "string" || topic === "" || topic.includes(",")) {
      throw new TypeError(`a topic must be a non-empty string without commas, got ${JSON.stringify(topic)}`);
    }
  }
  return [...new Set(topics)];
}

function sameTopics(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && a.every((topic) => b.includes(topic));
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
