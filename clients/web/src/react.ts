/**
 * React bindings: `usePgpulse` owns one `PgpulseClient` for as long as a
 * component wants it, and `usePgpulseListener` attaches a callback to one.
 *
 * Options arrive as a fresh object on every render, so the client is keyed by
 * what defines a subscription (URL, path, a fixed token) and not by the
 * object: re-rendering never reconnects, and changing one of those opens a
 * new subscription and closes the old. Topics change on the open socket
 * (`client.setTopics`), with no reconnect. A token function is read through
 * a ref at each connection, so an inline arrow function costs nothing.
 */

import { useEffect, useRef, useState } from "react";

import {
  PgpulseClient,
  type ClientEvents,
  type ClientEventKind,
  type EventFilter,
  type PgpulseClientOptions,
  type Status,
} from "./client.js";
import type { PgpulseEvent } from "./protocol.js";
import { resolveToken } from "./token.js";

export interface UsePgpulseOptions extends PgpulseClientOptions {
  /** How many recent events `events` keeps, oldest first. Default 50; 0 keeps none. */
  readonly keep?: number;
  /** False holds the connection off (e.g. until there is a token). Default true. */
  readonly enabled?: boolean;
}

export interface PgpulseState {
  /** The live client, for `usePgpulseListener`; null before the first effect and while disabled. */
  readonly client: PgpulseClient | null;
  readonly status: Status;
  readonly lastEvent: PgpulseEvent | null;
  readonly events: readonly PgpulseEvent[];
  /** The resume point; persist it to resume a later session. */
  readonly lastEventId: number | undefined;
}

const DEFAULT_KEEP = 50;

const IDLE: Omit<PgpulseState, "client"> = { status: "idle", lastEvent: null, events: [], lastEventId: undefined };

/** Subscribe for the lifetime of the component (or until the subscription's identity changes). */
export function usePgpulse(options: UsePgpulseOptions): PgpulseState {
  const latest = useRef(options);
  useEffect(() => {
    latest.current = options;
  });

  const enabled = options.enabled ?? true;
  const identity = JSON.stringify([
    enabled,
    options.url,
    options.path ?? null,
    typeof options.token === "string" ? options.token : null,
  ]);
  const topics = options.topics === undefined || options.topics.length === 0 ? null : [...new Set(options.topics)].sort();
  const topicsKey = JSON.stringify(topics);

  const [client, setClient] = useState<PgpulseClient | null>(null);
  const [state, setState] = useState<Omit<PgpulseState, "client">>(IDLE);

  useEffect(() => {
    if (!enabled) {
      setState(IDLE);
      return undefined;
    }
    const initial = latest.current;
    const created = new PgpulseClient({
      ...initial,
      token: typeof initial.token === "string" ? initial.token : () => resolveToken(latest.current.token),
      autoConnect: false,
    });
    setState({ ...IDLE, lastEventId: created.lastEventId });
    const unsubscribe = [
      created.on("status", (status) => setState((previous) => ({ ...previous, status }))),
      created.on("ready", ({ lastEventId }) => setState((previous) => ({ ...previous, lastEventId }))),
      created.on("event", (event) => {
        const keep = latest.current.keep ?? DEFAULT_KEEP;
        setState((previous) => ({
          ...previous,
          lastEvent: event,
          lastEventId: event.id,
          events: keep > 0 ? [...previous.events, event].slice(-keep) : previous.events,
        }));
      }),
    ];
    setClient(created);
    created.connect();
    return () => {
      for (const stop of unsubscribe) stop();
      created.close();
    };
    // `identity` stands for every option that defines the subscription.
  }, [identity]);

  // New topics go to the live client; the one just created already has them.
  useEffect(() => {
    if (client === null) return;
    // A refusal is reported on the client's "error" listeners, and the topics stay as they were.
    client.setTopics(topics ?? undefined).catch(() => undefined);
    // `topicsKey` stands for `topics`.
  }, [client, topicsKey]);

  return { client: enabled ? client : null, ...state };
}

/**
 * Call `listener` for each occurrence of `kind` on `client`, with the latest
 * `listener` (no resubscription when it changes). `filter` narrows events.
 */
export function usePgpulseListener<TData = unknown>(
  client: PgpulseClient | null,
  kind: "event",
  listener: (event: PgpulseEvent<TData>) => void,
  filter?: EventFilter,
): void;
export function usePgpulseListener<K extends Exclude<ClientEventKind, "event">>(
  client: PgpulseClient | null,
  kind: K,
  listener: (value: ClientEvents[K]) => void,
): void;
export function usePgpulseListener(
  client: PgpulseClient | null,
  kind: ClientEventKind,
  listener: (value: never) => void,
  filter?: EventFilter,
): void {
  // The overloads above tie each kind to its value's type; past them a value is opaque.
  const latest = useRef(listener as (value: unknown) => void);
  useEffect(() => {
    latest.current = listener as (value: unknown) => void;
  });
  const topic = filter?.topic;
  const type = filter?.type;
  useEffect(() => {
    if (client === null) return undefined;
    const call = (value: unknown): void => latest.current(value);
    return kind === "event" ? client.on("event", call, { topic, type }) : client.on(kind, call);
  }, [client, kind, topic, type]);
}
