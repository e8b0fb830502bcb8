/**
 * React bindings: `usePgpulse` owns one `PgpulseClient` for as long as a
 * component wants it, and `usePgpulseListener` attaches a callback to one.
 * `<PgpulseProvider client>` hands a client down to `useJob` (and any hook
 * given no client of its own).
 *
 * Options arrive as a fresh object on every render, so the client is keyed by
 * what defines a subscription (URL, path, a fixed token or none) and not by
 * the object: re-rendering never reconnects, and changing one of those opens
 * a new subscription and closes the old. Topics change on the open socket
 * (`client.setTopics`), with no reconnect. A token function is read through
 * a ref at each connection, so an inline arrow function costs nothing.
 */

import { createContext, createElement, useContext, useEffect, useRef, useState, type ReactElement, type ReactNode } from "react";

import {
  PgpulseClient,
  type ClientEvents,
  type ClientEventKind,
  type EventFilter,
  type PgpulseClientOptions,
  type PresenceMember,
  type Status,
} from "./client.js";
import { getJob, PgpulseHttpError } from "./http.js";
import { applyJobViewEvent, jobViewFromSnapshot, loadingJob, JOBS_TOPIC, type JobView } from "./jobView.js";
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
    typeof options.token === "string" ? ["token", options.token] : options.token === undefined ? ["cookies"] : ["function"],
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
      token: typeof initial.token === "function" ? () => resolveToken(latest.current.token ?? "") : initial.token,
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

  // A change of `topics` goes to the live client as the difference from the
  // previous `topics`, so topics other hooks added to it (useJob) stay. The
  // client just created already has them.
  const applied = useRef<{ readonly client: PgpulseClient; readonly topics: string[] | null } | null>(null);
  useEffect(() => {
    if (client === null) return;
    const previous = applied.current;
    applied.current = { client, topics };
    if (previous === null || previous.client !== client) return;
    // A refusal is reported on the client's "error" listeners, and the topics stay as they were.
    const ignore = (): undefined => undefined;
    if (previous.topics === null || topics === null) {
      client.setTopics(topics ?? undefined).catch(ignore);
      return;
    }
    const before = previous.topics;
    const drop = before.filter((topic) => !topics.includes(topic));
    const add = topics.filter((topic) => !before.includes(topic));
    if (drop.length > 0) client.unsubscribe(drop).catch(ignore);
    if (add.length > 0) client.subscribe(add).catch(ignore);
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

const PgpulseContext = createContext<PgpulseClient | null>(null);

/** Makes `client` the one hooks below it use when given none of their own. */
export function PgpulseProvider(props: { readonly client: PgpulseClient | null; readonly children?: ReactNode }): ReactElement {
  return createElement(PgpulseContext.Provider, { value: props.client }, props.children);
}

/** The client given, else the nearest `PgpulseProvider`'s. */
function useClient(client: PgpulseClient | null | undefined): PgpulseClient | null {
  const provided = useContext(PgpulseContext);
  return client === undefined ? provided : client;
}

export interface LiveJob<TResult = unknown> extends JobView<TResult> {
  /** Why the job could not be read (e.g. `not found`: another tenant's or user's), else null. */
  readonly loadError: string | null;
}

/**
 * One job, live: its status, progress, the text it streams and its result.
 *
 * It reads the job (`GET /api/jobs/{id}`) once the client is live and reads
 * topic `ai_jobs` (subscribing the client to it if it reads other topics),
 * then folds the job's events into it: a page that opens halfway through a
 * streamed answer shows the text so far, then the rest, with no gap and no
 * repeat. The job is read again after a `reset`, and if a chunk of text was
 * ever missed. `client` defaults to the `PgpulseProvider`'s.
 */
export function useJob<TResult = unknown>(
  jobId: string | null | undefined,
  options: { readonly client?: PgpulseClient | null } = {},
): LiveJob<TResult> {
  const client = useClient(options.client);
  const [state, setState] = useState<LiveJob<TResult>>(() => ({ ...loadingJob<TResult>(jobId ?? ""), loadError: null }));

  useEffect(() => {
    setState({ ...loadingJob<TResult>(jobId ?? ""), loadError: null });
    if (client === null || jobId === null || jobId === undefined || jobId === "") return undefined;
    const id = jobId;
    let view: JobView<TResult> | null = null; // null while a snapshot is being read
    let buffered: PgpulseEvent[] = [];
    let needsLoad = true;
    let stopped = false;
    let controller: AbortController | null = null;

    const load = async (): Promise<void> => {
      controller?.abort();
      const current = new AbortController();
      controller = current;
      needsLoad = false;
      view = null;
      try {
        const snapshot = await getJob<TResult>({ ...client.http, jobId: id, signal: current.signal });
        if (current.signal.aborted || stopped) return;
        let next = jobViewFromSnapshot(snapshot);
        for (const event of buffered) {
          const applied = applyJobViewEvent(next, event);
          if (applied === "gap") return void load();
          next = applied;
        }
        buffered = [];
        view = next;
        setState({ ...next, loadError: null });
      } catch (error) {
        if (current.signal.aborted || stopped) return;
        needsLoad = true; // the next `ready` tries again
        const message = error instanceof PgpulseHttpError && error.status === 404 ? "not found" : String(error);
        setState((previous) => ({ ...previous, loadError: message }));
      }
    };

    const stops = [
      client.on(
        "event",
        (event) => {
          if (view === null) {
            buffered.push(event);
            return;
          }
          const applied = applyJobViewEvent(view, event);
          if (applied === "gap") {
            buffered = [];
            void load();
          } else if (applied !== view) {
            view = applied;
            setState({ ...applied, loadError: null });
          }
        },
        { topic: JOBS_TOPIC },
      ),
      client.on("ready", () => {
        if (needsLoad) void load();
      }),
      client.on("reset", () => {
        needsLoad = true;
      }),
    ];
    const topics = client.topics;
    if (topics !== undefined && !topics.includes(JOBS_TOPIC)) {
      // Its events come from the answer on; the snapshot is read after it.
      void client.subscribe([JOBS_TOPIC]).then(
        (answer) => {
          if (!stopped && answer.lastEventId !== null) void load();
        },
        (error: unknown) => setState((previous) => ({ ...previous, loadError: String(error) })),
      );
    } else if (client.status === "open") {
      void load();
    }
    return () => {
      stopped = true;
      controller?.abort();
      for (const stop of stops) stop();
    };
  }, [client, jobId]);

  return state;
}

export interface LivePresence<TInfo = unknown> {
  /** The topic's members, in the order they joined; this client among them once joined. */
  readonly members: readonly PresenceMember<TInfo>[];
  /** This client's member id, once joined. */
  readonly self: string | null;
  /** Why the join was refused (a topic the token does not allow, a full topic, info too big), else null. */
  readonly error: string | null;
}

/**
 * Be present in `topic` while the component is mounted, and see who else is:
 * joins with `info` (what others see of this client; a change updates it
 * without leaving), follows the members as they join and leave on every
 * node, and joins again on every new connection. `client` defaults to the
 * `PgpulseProvider`'s.
 */
export function usePresence<TInfo = unknown>(
  topic: string | null | undefined,
  options: { readonly client?: PgpulseClient | null; readonly info?: TInfo } = {},
): LivePresence<TInfo> {
  const client = useClient(options.client);
  const [state, setState] = useState<LivePresence<TInfo>>({ members: [], self: null, error: null });
  const info = useRef(options.info);
  useEffect(() => {
    info.current = options.info;
  });
  const infoKey = JSON.stringify(options.info ?? null);

  useEffect(() => {
    setState({ members: [], self: null, error: null });
    if (client === null || topic === null || topic === undefined || topic === "") return undefined;
    const name = topic;
    const stop = client.on("presence", (presence) => {
      if (presence.topic !== name) return;
      setState({ members: presence.members as readonly PresenceMember<TInfo>[], self: presence.self, error: null });
    });
    client.joinPresence(name, info.current).catch((error: unknown) =>
      setState((previous) => ({ ...previous, error: error instanceof Error ? error.message : String(error) })),
    );
    return () => {
      stop();
      client.leavePresence(name).catch(() => undefined);
    };
  }, [client, topic]);

  // A new `info` joins again, which updates it for the others (no leave in between).
  const sentInfo = useRef(infoKey);
  useEffect(() => {
    if (sentInfo.current === infoKey) return;
    sentInfo.current = infoKey;
    if (client === null || topic === null || topic === undefined || topic === "") return;
    client.joinPresence(topic, info.current).catch(() => undefined);
  }, [client, topic, infoKey]);

  return state;
}
