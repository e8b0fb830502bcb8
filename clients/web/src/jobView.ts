/**
 * One job as `useJob` shows it: status, progress, the text it has streamed
 * so far, and its result, from a snapshot (`GET /api/jobs/{id}`) and then
 * its events, as pure functions.
 *
 * The snapshot is read once the client is live and reads `ai_jobs`, so every
 * event committed after it arrives live; events committed before it may
 * arrive too (they were in flight) and must change nothing:
 *
 * - Streamed text: each `ai_job.output` event says where its chunk starts
 *   (`offset`, in characters, i.e. code points as PostgreSQL counts them).
 *   Only the part past the text held is appended, so a chunk already in the
 *   snapshot adds nothing, and a chunk that starts past the end reveals a
 *   gap: the caller reads the snapshot again.
 * - `ai_job.started` counts only for a later attempt than the one known (the
 *   job starts over: text and progress go back to nothing).
 * - Progress only grows within an attempt; a job that ended stays ended.
 */

import type { JobSnapshot, JobStatus } from "./http.js";
import type { PgpulseEvent } from "./protocol.js";

export const JOBS_TOPIC = "ai_jobs";

export interface JobView<TResult = unknown> {
  readonly jobId: string;
  /** `loading` until the first snapshot is read. */
  readonly status: JobStatus | "loading";
  readonly kind: string | null;
  /** 0..1. */
  readonly progress: number;
  /** What the job has streamed so far (its latest attempt's). */
  readonly text: string;
  readonly result: TResult | null;
  readonly error: string | null;
  /** The attempt running or last run; 0 before a worker took it. */
  readonly attempt: number;
}

interface JobEventData {
  readonly job_id?: unknown;
  readonly kind?: unknown;
  readonly attempt?: unknown;
  readonly progress?: unknown;
  readonly offset?: unknown;
  readonly text?: unknown;
  readonly result?: unknown;
  readonly error?: unknown;
}

/** Before anything is known. */
export function loadingJob<TResult>(jobId: string): JobView<TResult> {
  return { jobId, status: "loading", kind: null, progress: 0, text: "", result: null, error: null, attempt: 0 };
}

export function jobViewFromSnapshot<TResult>(job: JobSnapshot<TResult>): JobView<TResult> {
  return {
    jobId: job.jobId,
    status: job.status,
    kind: job.kind,
    progress: job.progress,
    text: job.text,
    result: job.result,
    error: job.error,
    attempt: job.attempts,
  };
}

/** The view after one event; the same object when the event changes nothing; `gap` when text was missed. */
export function applyJobViewEvent<TResult>(view: JobView<TResult>, event: PgpulseEvent): JobView<TResult> | "gap" {
  if (event.topic !== JOBS_TOPIC || typeof event.data !== "object" || event.data === null) return view;
  const data = event.data as JobEventData;
  if (String(data.job_id) !== view.jobId) return view;
  const ended = view.status === "succeeded" || view.status === "failed";
  switch (event.type) {
    case "ai_job.started": {
      const attempt = typeof data.attempt === "number" ? data.attempt : view.attempt + 1;
      if (attempt <= view.attempt) return view;
      return {
        ...view,
        status: "running",
        kind: typeof data.kind === "string" ? data.kind : view.kind,
        progress: 0,
        text: "",
        result: null,
        error: null,
        attempt,
      };
    }
    case "ai_job.progress": {
      const progress = Number(data.progress);
      if (ended || !Number.isFinite(progress) || progress <= view.progress) return view;
      return { ...view, status: "running", progress: Math.min(1, progress) };
    }
    case "ai_job.output": {
      if (typeof data.offset !== "number" || typeof data.text !== "string") return view;
      const text = appendAt(view.text, data.offset, data.text);
      return text === null ? "gap" : text === view.text ? view : { ...view, text };
    }
    case "ai_job_complete":
      return ended ? view : { ...view, status: "succeeded", progress: 1, result: data.result as TResult };
    case "ai_job.failed":
      return ended ? view : { ...view, status: "failed", error: String(data.error ?? "failed") };
    default:
      return view;
  }
}

/**
 * `text` with the part of `chunk` that lies past it, where `chunk` starts
 * `offset` code points in; null when it starts past the end (a gap).
 */
export function appendAt(text: string, offset: number, chunk: string): string | null {
  const held = codePoints(text);
  if (offset > held) return null;
  const points = Array.from(chunk);
  if (offset + points.length <= held) return text;
  return text + points.slice(held - offset).join("");
}

function codePoints(text: string): number {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}
