/**
 * The HTTP API (docs/api.md §4) for the calls a browser app makes: its
 * notification and event history, publishing, and jobs. Tokens travel in the
 * `Authorization` header, never in the URL, where logs would keep them.
 * Without a token a request carries the page's own cookies, which is how an
 * app that embeds pgpulse (library mode, same origin) authenticates.
 *
 * A browser hides why a cross-origin request failed: a response refused
 * under CORS and an unreachable server both reject `fetch` with a bare
 * TypeError. The difference matters (one is a line of configuration), so a
 * failed cross-origin request is followed by two questions. `GET /healthz`,
 * which the server lets any origin read, says whether this page's origin is
 * allowed and what to set if not. A server that does not say is asked with
 * a `no-cors` request to the same URL, which CORS does not govern: if that
 * gets an answer, the server is up and only this origin can be refused.
 */

import type { PgpulseEvent } from "./protocol.js";
import { resolveOptionalToken, type TokenSource } from "./token.js";

export interface HttpOptions {
  /** The server's base URL, e.g. `https://events.example.com` (relative in a browser). */
  readonly url: string;
  /** A JWT, or a function returning one; none sends the page's cookies instead (same origin). */
  readonly token?: TokenSource;
  readonly signal?: AbortSignal;
  /** The fetch implementation; default the global one. */
  readonly fetch?: typeof fetch;
}

/** A notification as `GET /api/notifications` returns it. */
export interface StoredNotification {
  readonly id: number;
  readonly message: string;
  /** ISO-8601 time it was stored. */
  readonly created_at: string;
}

export interface NotificationCreated {
  readonly ok: true;
  /** The notification's id, the same as the event's `data.notification_id`. */
  readonly id: number;
  readonly event_id: number;
}

export interface EventToPublish<TData = unknown> {
  readonly topic: string;
  readonly type: string;
  readonly data: TData;
  /** Deliver only to connections whose token `sub` is this user. */
  readonly user_id?: string;
}

/** Where a job stands: `queued` until a worker takes it, then `running`, then `succeeded` or `failed`. */
export type JobStatus = "queued" | "running" | "succeeded" | "failed";

export interface JobToSubmit<TInput = unknown> {
  /** Which handler runs it; `pgpulse worker` has `echo`, `sleep` and `stream` built in. */
  readonly kind: string;
  /** Any JSON the handler takes; default `{}`. */
  readonly input?: TInput;
}

export interface SubmittedJob {
  /** The job's id: its events' `data.job_id`, and what `getJob` takes. */
  readonly jobId: string;
}

/** A job as `GET /api/jobs/{job_id}` shows it, with camel-case names. */
export interface JobSnapshot<TResult = unknown, TInput = unknown> {
  readonly jobId: string;
  readonly kind: string;
  readonly status: JobStatus;
  /** 0..1, as the worker last reported it; 1 once succeeded. */
  readonly progress: number;
  readonly input: TInput;
  /** The handler's result once succeeded, else null. */
  readonly result: TResult | null;
  /** Why it failed, once failed, else null. */
  readonly error: string | null;
  /** How many times a worker has started it: more than 1 after a worker was lost mid-job. */
  readonly attempts: number;
  /** ISO-8601 times. */
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  /** The text the job has streamed so far (its latest attempt's); "" if none. */
  readonly text: string;
}

/** Which page of `GET /api/events` to read. */
export interface EventsQuery {
  /** Topics to read; default: every topic the token allows. */
  readonly topics?: readonly string[];
  /** Only ids below this one: page back from the oldest id of the previous page. */
  readonly before?: number;
  /** Only ids above this one; the page is then the oldest ones (paging forward). */
  readonly after?: number;
  /** Events per page, 1 to 1000. Default 100. */
  readonly limit?: number;
}

/** A page of the tenant's retained events, as the token may read them. */
export interface EventsPage<TData = unknown> {
  /** In id order, oldest first, whichever way the page was read. */
  readonly events: readonly PgpulseEvent<TData>[];
  /**
   * The tenant's newest id when the page was read. No event of the page is
   * after it: open a client with `lastEventId` set to it and the stream goes
   * on exactly where the page ended.
   */
  readonly lastEventId: number;
  /** Whether the next page in the same direction has events. */
  readonly more: boolean;
}

/** The server answered with an error status; `body` is its explanation. */
export class PgpulseHttpError extends Error {
  override readonly name = "PgpulseHttpError";
  constructor(
    readonly status: number,
    readonly body: string,
    method: string,
    path: string,
  ) {
    super(`${method} ${path} answered ${status}: ${body.slice(0, 200)}`);
  }
}

/**
 * The browser refused the server's answer because the server does not allow
 * this page's origin (CORS): the server is up, and one setting fixes it.
 */
export class PgpulseOriginError extends Error {
  override readonly name = "PgpulseOriginError";
  constructor(
    /** The page's origin, the one to allow. */
    readonly origin: string,
    /** The server's origin. */
    readonly server: string,
    method: string,
    path: string,
    options: { readonly cause?: unknown; readonly advice?: string } = {},
  ) {
    // The server's own advice names the origins it allows already; without it, this one.
    const advice = options.advice ?? `this origin is not allowed: set PGPULSE_ALLOWED_ORIGINS=${origin}`;
    super(`${advice} on the server at ${server} (the browser refused its answer to ${method} ${path} under CORS)`, {
      cause: options.cause,
    });
  }
}

/** The tenant's notifications, newest first; `before` pages back from a notification id. */
export function listNotifications(
  options: HttpOptions,
  query: { readonly limit?: number; readonly before?: number } = {},
): Promise<StoredNotification[]> {
  const params = new URLSearchParams();
  if (query.limit !== undefined) params.set("limit", String(query.limit));
  if (query.before !== undefined) params.set("before", String(query.before));
  const search = params.toString();
  return request<StoredNotification[]>(options, "GET", `/api/notifications${search === "" ? "" : `?${search}`}`);
}

/**
 * A page of the tenant's retained events (`GET /api/events`): the newest ones
 * below `before`, or with `after` the oldest ones above it. To load state
 * and then go live without a gap or a repeat, build the state from a page and
 * start a client with `lastEventId: page.lastEventId`.
 */
export async function listEvents<TData = unknown>(options: HttpOptions, query: EventsQuery = {}): Promise<EventsPage<TData>> {
  const params = new URLSearchParams();
  if (query.topics !== undefined && query.topics.length > 0) params.set("topic", query.topics.join(","));
  if (query.before !== undefined) params.set("before", String(query.before));
  if (query.after !== undefined) params.set("after", String(query.after));
  if (query.limit !== undefined) params.set("limit", String(query.limit));
  const search = params.toString();
  const page = await request<{ events: PgpulseEvent<TData>[]; last_event_id: number; more: boolean }>(
    options,
    "GET",
    `/api/events${search === "" ? "" : `?${search}`}`,
  );
  return { events: page.events, lastEventId: page.last_event_id, more: page.more };
}

/** The tenant's newest event id now (`GET /api/position`). */
export async function getPosition(options: HttpOptions): Promise<number> {
  const position = await request<{ last_event_id: number }>(options, "GET", "/api/position");
  return position.last_event_id;
}

/** Store a notification and publish its event, in one transaction on the server; the token needs the `publish` scope. */
export function createNotification(options: HttpOptions, message: string): Promise<NotificationCreated> {
  return request<NotificationCreated>(options, "POST", "/api/notifications", { message });
}

/** Publish an event; the token needs the `publish` scope. Returns the event's id. */
export async function publishEvent<TData>(options: HttpOptions, event: EventToPublish<TData>): Promise<number> {
  const created = await request<{ event_id: number }>(options, "POST", "/api/events", event);
  return created.event_id;
}

/**
 * Queue a job for a worker (answered 202 at once); the token needs the `jobs`
 * scope. Its progress and end
 * arrive as events on topic `ai_jobs`, for the token's user when it has a
 * `sub`, else for the whole tenant: subscribe before submitting to see them all.
 */
export async function submitJob<TInput>(options: HttpOptions & JobToSubmit<TInput>): Promise<SubmittedJob> {
  const { kind, input } = options;
  const accepted = await request<{ job_id: string }>(options, "POST", "/api/jobs", { kind, input });
  return { jobId: accepted.job_id };
}

/**
 * A job's state now, for a page that (re)loads its view. Another tenant's or
 * user's job, or an id that is not one, is a `PgpulseHttpError` with status 404.
 */
export async function getJob<TResult = unknown, TInput = unknown>(
  options: HttpOptions & { readonly jobId: string },
): Promise<JobSnapshot<TResult, TInput>> {
  const job = await request<WireJob<TResult, TInput>>(options, "GET", `/api/jobs/${encodeURIComponent(options.jobId)}`);
  return fromWire(job);
}

/** A page of `listJobs`: newest first. */
export interface JobsPage<TResult = unknown, TInput = unknown> {
  readonly jobs: readonly JobSnapshot<TResult, TInput>[];
  /** Whether older jobs follow: pass the last job's `jobId` as `before`. */
  readonly more: boolean;
}

/**
 * The recent jobs the token may read, newest first: its tenant's shared
 * jobs and, for a token with a `sub`, that user's own. A page (re)loading its
 * view reads them once its client is live, then follows their events.
 */
export async function listJobs<TResult = unknown, TInput = unknown>(
  options: HttpOptions,
  query: { readonly before?: string; readonly limit?: number } = {},
): Promise<JobsPage<TResult, TInput>> {
  const params = new URLSearchParams();
  if (query.before !== undefined) params.set("before", query.before);
  if (query.limit !== undefined) params.set("limit", String(query.limit));
  const search = params.toString();
  const page = await request<{ jobs: WireJob<TResult, TInput>[]; more: boolean }>(
    options,
    "GET",
    `/api/jobs${search === "" ? "" : `?${search}`}`,
  );
  return { jobs: page.jobs.map(fromWire), more: page.more };
}

function fromWire<TResult, TInput>(job: WireJob<TResult, TInput>): JobSnapshot<TResult, TInput> {
  return {
    jobId: job.job_id,
    kind: job.kind,
    status: job.status,
    progress: job.progress,
    input: job.input,
    result: job.result,
    error: job.error,
    attempts: job.attempts,
    createdAt: job.created_at,
    startedAt: job.started_at,
    finishedAt: job.finished_at,
    text: job.text,
  };
}

interface WireJob<TResult, TInput> {
  readonly job_id: string;
  readonly kind: string;
  readonly status: JobStatus;
  readonly progress: number;
  readonly input: TInput;
  readonly result: TResult | null;
  readonly error: string | null;
  readonly attempts: number;
  readonly created_at: string;
  readonly started_at: string | null;
  readonly finished_at: string | null;
  readonly text: string;
}

async function request<T>(options: HttpOptions, method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
  const token = await resolveOptionalToken(options.token);
  const headers: Record<string, string> = { Accept: "application/json" };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const fetchImpl = options.fetch ?? fetch;
  const url = apiUrl(options.url, path);
  const bare = path.split("?")[0] ?? path;
  let response: Response;
  try {
    response = await fetchImpl(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: options.signal,
    });
  } catch (error) {
    throw await diagnose(error, { fetchImpl, base: options.url, url, method, path: bare, signal: options.signal });
  }
  if (!response.ok) {
    throw new PgpulseHttpError(response.status, await response.text(), method, bare);
  }
  return (await response.json()) as T;
}

/**
 * Why `fetch` rejected: a `PgpulseOriginError` when the server says (in
 * `/healthz`) or shows (by answering a `no-cors` request) that it is up and
 * refuses this page's origin, else the original error. Only a cross-origin
 * TypeError in a browser is looked into.
 */
async function diagnose(
  error: unknown,
  call: {
    readonly fetchImpl: typeof fetch;
    /** The server's base URL, as the caller gave it. */
    readonly base: string;
    readonly url: string;
    readonly method: string;
    readonly path: string;
    readonly signal: AbortSignal | undefined;
  },
): Promise<unknown> {
  const { fetchImpl, url, method, path, signal } = call;
  const page = pageOrigin();
  const server = new URL(url).origin;
  if (!(error instanceof TypeError) || page === undefined || page === server || signal?.aborted === true) {
    return error;
  }
  const report = await originReport(fetchImpl, apiUrl(call.base, "/healthz"), signal);
  if (report !== undefined) {
    return report.allowed ? error : new PgpulseOriginError(page, server, method, path, { cause: error, advice: report.message });
  }
  try {
    // An opaque answer (any status) proves the server is reachable; no
    // headers and GET keep it a "simple" request, so no preflight is sent.
    await fetchImpl(url, { method: "GET", mode: "no-cors", credentials: "omit", cache: "no-store", signal });
  } catch {
    return error; // unreachable (down, offline, blocked): not an origin problem
  }
  return new PgpulseOriginError(page, server, method, path, { cause: error });
}

/**
 * What the server's `GET /healthz` says of this page's origin: allowed, or
 * not with the setting to change. Undefined when the server does not say
 * (it cannot be reached, or predates the report).
 */
async function originReport(
  fetchImpl: typeof fetch,
  healthz: string,
  signal: AbortSignal | undefined,
): Promise<{ readonly allowed: boolean; readonly message?: string } | undefined> {
  try {
    const response = await fetchImpl(healthz, { method: "GET", credentials: "omit", cache: "no-store", signal });
    if (!response.ok) return undefined;
    const body = (await response.json()) as { origin?: { allowed?: unknown; message?: unknown } } | null;
    const origin = body?.origin;
    if (origin === undefined || typeof origin.allowed !== "boolean") return undefined;
    return { allowed: origin.allowed, message: typeof origin.message === "string" ? origin.message : undefined };
  } catch {
    return undefined;
  }
}

function pageOrigin(): string | undefined {
  if (typeof location === "undefined") return undefined;
  const origin = location.origin;
  return origin === "null" || origin === "" ? undefined : origin;
}

function apiUrl(base: string, path: string): string {
  const url = new URL(base, typeof location === "undefined" ? undefined : location.href);
  return url.origin + url.pathname.replace(/\/+$/, "") + path;
}
