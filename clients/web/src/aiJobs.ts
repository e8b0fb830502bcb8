/**
 * AI jobs as the notification center shows them: one row per job, folded
 * from the `ai_jobs` topic's events (contract §4). Event ids order them, so
 * the last event applied is the job's current state.
 *
 * A job can start more than once: when its worker is lost mid-job, another
 * takes it over and publishes `ai_job.started` again with the next attempt
 * number. That event starts the row over (progress 0, no message) rather
 * than adding a second row.
 *
 * After a reload the rows come from `GET /api/jobs` (`mergeJobSnapshots`),
 * read once the subscription is live. A job's events from then on arrive
 * live too, so a row the stream has already touched is newer than, or as
 * new as, the snapshot: the stream's row wins, and the snapshot only adds
 * the jobs the stream has not mentioned.
 */

import type { JobSnapshot } from "./http.js";
import type { PgpulseEvent } from "./protocol.js";

export const AI_JOBS_TOPIC = "ai_jobs";

/** `queued` only comes from a snapshot: no event is published until a worker starts the job. */
export type JobState = "queued" | "running" | "complete" | "failed";

export interface JobItem {
  readonly jobId: string;
  readonly state: JobState;
  /** 0..1; 1 once complete. */
  readonly progress: number;
  /** The job's kind, from `ai_job.started`; unknown when the first event seen came later. */
  readonly kind?: string;
  /** The attempt running or last run, from `ai_job.started`: 2 and up after a worker was lost. */
  readonly attempt?: number;
  /** The message of the latest progress report, e.g. "step 2 of 4", while running. */
  readonly message?: string;
  readonly result?: unknown;
  readonly error?: string;
  /** ISO-8601 time of the last event. */
  readonly updatedAt: string;
}

interface JobData {
  readonly job_id?: unknown;
  readonly kind?: unknown;
  readonly attempt?: unknown;
  readonly progress?: unknown;
  readonly message?: unknown;
  readonly result?: unknown;
  readonly error?: unknown;
}

/** The jobs after one event, newest first, at most `max`; `jobs` itself when the event is not a job's. */
export function applyJobEvent(jobs: readonly JobItem[], event: PgpulseEvent, max: number): readonly JobItem[] {
  if (event.topic !== AI_JOBS_TOPIC || typeof event.data !== "object" || event.data === null) return jobs;
  const data = event.data as JobData;
  if (typeof data.job_id !== "string" && typeof data.job_id !== "number") return jobs;
  const jobId = String(data.job_id);
  const previous = jobs.find((job) => job.jobId === jobId);
  // What the events so far say about the job itself, without the state of any attempt.
  const known: Pick<JobItem, "jobId" | "kind" | "attempt"> = {
    jobId,
    ...(previous?.kind === undefined ? {} : { kind: previous.kind }),
    ...(previous?.attempt === undefined ? {} : { attempt: previous.attempt }),
  };
  let next: JobItem;
  switch (event.type) {
    case "ai_job.started":
      next = {
        ...known,
        ...(typeof data.kind === "string" ? { kind: data.kind } : {}),
        ...(isAttempt(data.attempt) ? { attempt: data.attempt } : {}),
        state: "running",
        progress: 0,
        updatedAt: event.ts,
      };
      break;
    case "ai_job.progress":
      next = {
        ...known,
        state: "running",
        progress: clamp(Number(data.progress)),
        ...(typeof data.message === "string" ? { message: data.message } : {}),
        updatedAt: event.ts,
      };
      break;
    case "ai_job_complete": // the seed's name for it, kept by the contract
      next = { ...known, state: "complete", progress: 1, result: data.result, updatedAt: event.ts };
      break;
    case "ai_job.failed":
      next = {
        ...known,
        state: "failed",
        progress: previous?.progress ?? 0,
        error: String(data.error ?? "failed"),
        updatedAt: event.ts,
      };
      break;
    default:
      return jobs;
  }
  return [next, ...jobs.filter((job) => job.jobId !== jobId)].slice(0, Math.max(0, max));
}

/** A row from a job as `GET /api/jobs` shows it. */
export function jobFromSnapshot(job: JobSnapshot): JobItem {
  const state: JobState =
    job.status === "succeeded" ? "complete" : job.status === "failed" ? "failed" : job.status;
  return {
    jobId: job.jobId,
    kind: job.kind,
    state,
    progress: clamp(job.progress),
    ...(job.attempts > 0 ? { attempt: job.attempts } : {}),
    ...(job.status === "succeeded" ? { result: job.result } : {}),
    ...(job.error !== null ? { error: job.error } : {}),
    updatedAt: job.finishedAt ?? job.startedAt ?? job.createdAt,
  };
}

/** The rows with the snapshot's jobs the stream has not mentioned added after them, at most `max`. */
export function mergeJobSnapshots(jobs: readonly JobItem[], snapshots: readonly JobSnapshot[], max: number): readonly JobItem[] {
  const known = new Set(jobs.map((job) => job.jobId));
  const added = snapshots.filter((job) => !known.has(job.jobId)).map(jobFromSnapshot);
  if (added.length === 0) return jobs;
  return [...jobs, ...added].slice(0, Math.max(0, max));
}

function isAttempt(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value > 0;
}

function clamp(progress: number): number {
  return Number.isFinite(progress) ? Math.min(1, Math.max(0, progress)) : 0;
}
