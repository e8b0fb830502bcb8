/**
 * The HTTP API (contract §4) for the calls a browser app makes: its
 * notification history, publishing, and jobs. Tokens travel in the
 * `Authorization` header, never in the URL, where logs would keep them.
 */

import { resolveToken, type TokenSource } from "./token.js";

export interface HttpOptions {
  /** The server's base URL, e.g. `https://events.example.com` (relative in a browser). */
  readonly url: string;
  readonly token: TokenSource;
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
  /** Which handler runs it; `pgpulse worker` has `echo` and `sleep` built in. */
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
}

async function request<T>(options: HttpOptions, method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
  const token = await resolveToken(options.token);
  const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const fetchImpl = options.fetch ?? fetch;
  const response = await fetchImpl(apiUrl(options.url, path), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: options.signal,
  });
  if (!response.ok) {
    throw new PgpulseHttpError(response.status, await response.text(), method, path.split("?")[0] ?? path);
  }
  return (await response.json()) as T;
}

function apiUrl(base: string, path: string): string {
  const url = new URL(base, typeof location === "undefined" ? undefined : location.href);
  return url.origin + url.pathname.replace(/\/+$/, "") + path;
}
