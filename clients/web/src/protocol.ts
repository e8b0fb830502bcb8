/**
 * The wire format of `GET /ws`, as the pgpulse contract defines it.
 *
 * The server sends JSON text frames of two kinds: events, which carry an `id`
 * (the tenant's sequence number, the resume position), and control frames,
 * which carry an `op` and never an `id`. Parsing sorts a frame into one of
 * the two, or rejects it, in one place so the client never guesses.
 */

/** One event as the server sends it. `TData` is unchecked: it is the publisher's JSON. */
export interface PgpulseEvent<TData = unknown> {
  /** The tenant's sequence number: strictly increasing on a connection and across resumes. */
  readonly id: number;
  /**
   * What `publish` returned for this event (unique in the database), so a
   * publisher can recognise its own event. Its id is taken at commit.
   */
  readonly key: number;
  readonly tenant_id: string;
  readonly topic: string;
  readonly type: string;
  readonly data: TData;
  /** ISO-8601 UTC time the event was committed. */
  readonly ts: string;
  /** Present when the event targets one user (the token's `sub`). */
  readonly user_id?: string;
}

/** Sent once the subscription is live, after any replay. */
export interface ReadyFrame {
  readonly op: "ready";
  /** The newest id the connection has been sent or skipped: the new resume point. */
  readonly last_event_id: number;
}

/** Why the server could not resume from the client's position. */
export type ResetReason = "history_expired" | "unknown_position" | (string & {});

/** The resume point is gone: the client must reload its state. */
export interface ResetFrame {
  readonly op: "reset";
  readonly reason: ResetReason;
}

export interface PongFrame {
  readonly op: "pong";
}

/** The answer to a malformed or refused client frame; the connection stays open. */
export interface ErrorFrame {
  readonly op: "error";
  readonly message: string;
  /** The `ref` of the request it answers, when it had one. */
  readonly ref?: Ref;
}

/**
 * The answer to `{"op": "refresh"}`: the connection now lives until `exp` (Unix seconds),
 * reading `topics` (absent: every topic the token allows), which a refresh may have narrowed.
 */
export interface RefreshedFrame {
  readonly op: "refreshed";
  readonly exp: number | null;
  readonly topics?: readonly string[];
}


/** What a client may put in a request's `ref` to match the answer to it. */
export type Ref = string | number;

/**
 * The answer to `{"op": "subscribe"}`: the new topics' events after
 * `last_event_id` come on this connection; older ones are for `GET /api/events`.
 */
export interface SubscribedFrame {
  readonly op: "subscribed";
  readonly topics: readonly string[];
  readonly last_event_id: number;
  readonly ref?: Ref;
}

/** The answer to `{"op": "unsubscribe"}`: the topics' events up to `last_event_id` may have come, none after. */
export interface UnsubscribedFrame {
  readonly op: "unsubscribed";
  readonly topics: readonly string[];
  readonly last_event_id: number;
  readonly ref?: Ref;
}

/** A presence member as the server sends it. */
export interface WireMember {
  readonly id: string;
  readonly user_id: string | null;
  readonly info: unknown;
  readonly joined_at: string;
}

/** A topic's presence: the answer to `presence.join` (with `self`) and to `presence.get`. */
export interface PresenceFrame {
  readonly op: "presence";
  readonly topic: string;
  readonly members: readonly WireMember[];
  /** This connection's member id, when it is a member. */
  readonly self?: string;
  readonly ref?: Ref;
}

/** Another member joined (or changed its info), or left; with `ref`, the answer to our own leave. */
export interface PresenceChangeFrame {
  readonly op: "presence.joined" | "presence.left";
  readonly topic: string;
  readonly member: WireMember;
  readonly ref?: Ref;
}

export type ControlFrame =
  | ReadyFrame
  | ResetFrame
  | PongFrame
  | ErrorFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | PresenceFrame
  | PresenceChangeFrame
  | RefreshedFrame;

export type Frame =
  | { readonly kind: "event"; readonly event: PgpulseEvent }
  | { readonly kind: "control"; readonly control: ControlFrame }
  | { readonly kind: "unknown"; readonly reason: string };

/** WebSocket close codes the client acts on (RFC 6455 §7.4.1, and the contract §2). */
export const WS_1000_NORMAL_CLOSURE = 1000;
/** No close frame was received: the network or the server went away. */
export const WS_1006_ABNORMAL_CLOSURE = 1006;
/** A refused token or topic (before any event), or abuse of the connection. */
export const WS_1008_POLICY_VIOLATION = 1008;
export const WS_1009_MESSAGE_TOO_BIG = 1009;
/** The server is shutting down: reconnect, to it or another node, and resume. */
export const WS_1012_SERVICE_RESTART = 1012;
/** Slow consumer or database unavailable: reconnect later and resume. */
export const WS_1013_TRY_AGAIN_LATER = 1013;
/** Sent by the client when it gives up on a connection that stopped answering. */
export const WS_4000_CLIENT_TIMEOUT = 4000;

/** The server's close reason at a token's `exp`. */
export const TOKEN_EXPIRED = "token expired";

/** The client's keepalive frame. */
export const PING_FRAME = JSON.stringify({ op: "ping" });

/** Sort one text frame into an event, a control frame, or something this client does not know. */
export function parseFrame(text: string): Frame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: "unknown", reason: `frame is not JSON: ${text.slice(0, 80)}` };
  }
  if (!isRecord(value)) {
    return { kind: "unknown", reason: "frame is not a JSON object" };
  }
  if (typeof value.op === "string") {
    const control = toControl(value);
    return control === null
      ? { kind: "unknown", reason: `unknown op ${JSON.stringify(value.op).slice(0, 40)}` }
      : { kind: "control", control };
  }
  if (
    typeof value.id === "number" &&
    Number.isSafeInteger(value.id) &&
    typeof value.topic === "string" &&
    typeof value.type === "string"
  ) {
    return { kind: "event", event: value as unknown as PgpulseEvent };
  }
  return { kind: "unknown", reason: "frame has neither an op nor an integer id" };
}

function toControl(value: Record<string, unknown>): ControlFrame | null {
  switch (value.op) {
    case "ready":
      return typeof value.last_event_id === "number"
        ? { op: "ready", last_event_id: value.last_event_id }
        : null;
    case "reset":
      return { op: "reset", reason: typeof value.reason === "string" ? value.reason : "unknown" };
    case "pong":
      return { op: "pong" };
    case "error":
      return {
        op: "error",
        message: typeof value.message === "string" ? value.message : "",
        ...refOf(value),
      };
    case "subscribed":
    case "unsubscribed":
      return isStringArray(value.topics) && typeof value.last_event_id === "number"
        ? { op: value.op, topics: value.topics, last_event_id: value.last_event_id, ...refOf(value) }
        : null;
    case "presence":
      return typeof value.topic === "string" && Array.isArray(value.members) && value.members.every(isMember)
        ? {
            op: "presence",
            topic: value.topic,
            members: value.members,
            ...(typeof value.self === "string" ? { self: value.self } : {}),
            ...refOf(value),
          }
        : null;
    case "presence.joined":
    case "presence.left":
      return typeof value.topic === "string" && isMember(value.member)
        ? { op: value.op, topic: value.topic, member: value.member, ...refOf(value) }
        : null;
    case "refreshed":
      return {
        op: "refreshed",
        exp: typeof value.exp === "number" ? value.exp : null,
        ...(Array.isArray(value.topics) && value.topics.every((topic) => typeof topic === "string")
          ? { topics: value.topics as string[] }
          : {}),
      };
    default:
      return null;
  }
}

function isMember(value: unknown): value is WireMember {
  return isRecord(value) && typeof value.id === "string";
}

function refOf(value: Record<string, unknown>): { ref?: Ref } {
  return typeof value.ref === "string" || typeof value.ref === "number" ? { ref: value.ref } : {};
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === "string");
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
