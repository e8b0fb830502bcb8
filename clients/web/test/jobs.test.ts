/**
 * Jobs against a real server and a real `pgpulse worker` on its database:
 * `submitJob`, the worker's events over `PgpulseClient`, `getJob`, and who
 * may read a job.
 */

import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import WebSocket from "ws";

import { applyJobEvent, type JobItem } from "../src/aiJobs.js";
import { PgpulseClient } from "../src/client.js";
import { getJob, listJobs, submitJob, PgpulseHttpError } from "../src/http.js";
import type { PgpulseEvent } from "../src/protocol.js";
import { Recorder } from "./support/recorder.js";
import { startWorker, type RunningWorker } from "./support/server.js";
import { mintToken, uniqueTenant } from "./support/token.js";

const url = inject("pgpulseUrl");
// A `sleep` job of 1 s, with room for a busy machine.
const JOB_TIMEOUT_MS = 30_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface JobEventData {
  readonly job_id: string;
  readonly kind?: string;
  readonly attempt?: number;
  readonly progress?: number;
  readonly message?: string;
  readonly result?: unknown;
  readonly error?: string;
}

let worker: RunningWorker | undefined;
const recorders: Recorder[] = [];

beforeAll(async () => {
  worker = await startWorker(inject("pgpulseDataDir"));
});

afterEach(() => {
  for (const recorder of recorders.splice(0)) recorder.stop();
});

afterAll(async () => {
  await worker?.stop();
});

function connect(token: string): Recorder {
  const recorder = new Recorder(new PgpulseClient({ url, token, topics: ["ai_jobs"], WebSocket }));
  recorders.push(recorder);
  return recorder;
}

function eventsOf(recorder: Recorder, jobId: string): PgpulseEvent<JobEventData>[] {
  return (recorder.events as PgpulseEvent<JobEventData>[]).filter((event) => event.data.job_id === jobId);
}

/** The job's events once its `ai_job_complete` or `ai_job.failed` has arrived. */
async function untilEnded(recorder: Recorder, jobId: string): Promise<PgpulseEvent<JobEventData>[]> {
  const ended = (): boolean =>
    eventsOf(recorder, jobId).some((event) => event.type === "ai_job_complete" || event.type === "ai_job.failed");
  try {
    await recorder.until(ended, `the end of job ${jobId}`, JOB_TIMEOUT_MS);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`${message}\n--- pgpulse worker output ---\n${worker?.log() ?? ""}`);
  }
  return eventsOf(recorder, jobId);
}

describe("jobs", () => {
  it("runs a submitted job: started, progress up to 1, complete, then getJob says succeeded", async () => {
    const tenant = uniqueTenant("jobs");
    const token = mintToken({ tenant_id: tenant, sub: "alice", scope: "jobs" });
    const recorder = connect(token);
    await recorder.status("open"); // subscribed before submitting, so no event of the job is missed

    const input = { seconds: 1, steps: 4 };
    const { jobId } = await submitJob({ url, token, kind: "sleep", input });
    expect(jobId).toMatch(UUID);
    const events = await untilEnded(recorder, jobId);

    const types = events.map((event) => event.type);
    expect(types[0]).toBe("ai_job.started");
    expect(types.at(-1)).toBe("ai_job_complete");
    expect(types.slice(1, -1).every((type) => type === "ai_job.progress")).toBe(true);
    expect(events[0]?.data).toEqual({ job_id: jobId, kind: "sleep", attempt: 1 });

    const reports = events.filter((event) => event.type === "ai_job.progress");
    const progress = reports.map((event) => event.data.progress ?? Number.NaN);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.every((value, index) => index === 0 || value >= (progress[index - 1] ?? Infinity))).toBe(true);
    expect(progress.at(-1)).toBe(1);
    expect(reports.every((event) => /^step [1-4] of 4$/.test(event.data.message ?? ""))).toBe(true);
    expect(reports.at(-1)?.data.message).toBe("step 4 of 4");

    const result = { slept: 1, steps: 4 };
    expect(events.at(-1)?.data).toEqual({ job_id: jobId, result });
    // Submitted with a `sub`: the job is alice's, and so are its events.
    expect(events.every((event) => event.tenant_id === tenant && event.topic === "ai_jobs")).toBe(true);
    expect(events.every((event) => event.user_id === "alice")).toBe(true);

    // The notification center's fold of the same events: one finished row.
    const rows = events.reduce<readonly JobItem[]>((jobs, event) => applyJobEvent(jobs, event, 5), []);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ jobId, kind: "sleep", attempt: 1, state: "complete", progress: 1, result });

    // The row and its event are one transaction: once the event is here, so is the state.
    const job = await getJob<typeof result, typeof input>({ url, token, jobId });
    expect(job).toMatchObject({
      jobId,
      kind: "sleep",
      status: "succeeded",
      progress: 1,
      input,
      result,
      error: null,
      attempts: 1,
    });
    const created = Date.parse(job.createdAt);
    const started = Date.parse(job.startedAt ?? "");
    const finished = Date.parse(job.finishedAt ?? "");
    expect(created).toBeLessThanOrEqual(started);
    expect(started).toBeLessThanOrEqual(finished);
  });

  it("lets only the job's tenant, and user, read it", async () => {
    const tenant = uniqueTenant("jobs-owner");
    const alice = mintToken({ tenant_id: tenant, sub: "alice", scope: "jobs" });
    const { jobId } = await submitJob({ url, token: alice, kind: "echo", input: { n: 1 } });
    const mine = await getJob({ url, token: alice, jobId });
    expect(mine).toMatchObject({ jobId, kind: "echo", input: { n: 1 } });

    const strangers = {
      "another tenant": mintToken({ tenant_id: uniqueTenant("jobs-other"), sub: "alice" }),
      "another user": mintToken({ tenant_id: tenant, sub: "bob" }),
      "the tenant without a user": mintToken({ tenant_id: tenant, scope: "jobs" }),
    };
    for (const [who, token] of Object.entries(strangers)) {
      const refused = getJob({ url, token, jobId });
      await expect(refused, who).rejects.toBeInstanceOf(PgpulseHttpError);
      await expect(refused, who).rejects.toMatchObject({ status: 404 });
    }
    await expect(getJob({ url, token: alice, jobId: "not-a-job-id" })).rejects.toMatchObject({ status: 404 });

    // A job submitted without a user is the whole tenant's.
    const shared = await submitJob({ url, token: mintToken({ tenant_id: tenant, scope: "jobs" }), kind: "echo" });
    expect(await getJob({ url, token: mintToken({ tenant_id: tenant, sub: "bob" }), jobId: shared.jobId })).toMatchObject({
      jobId: shared.jobId,
      kind: "echo",
      input: {},
    });
  });

  it("refuses a malformed job (422) and a token it cannot verify (401)", async () => {
    const token = mintToken({ tenant_id: uniqueTenant("jobs-bad"), scope: "jobs" });
    const malformed = submitJob({ url, token, kind: "" });
    await expect(malformed).rejects.toBeInstanceOf(PgpulseHttpError);
    await expect(malformed).rejects.toMatchObject({ status: 422, body: expect.stringContaining("kind") });
    await expect(submitJob({ url, token: "not-a-jwt", kind: "echo" })).rejects.toMatchObject({ status: 401 });
  });

  it("lists the token's recent jobs, newest first, paged", async () => {
    const tenant = uniqueTenant("jobs-list");
    const alice = mintToken({ tenant_id: tenant, sub: "alice", scope: "jobs" });
    const shared = mintToken({ tenant_id: tenant, scope: "jobs" });
    const submitted: string[] = [];
    for (const token of [alice, shared, mintToken({ tenant_id: tenant, sub: "bob", scope: "jobs" }), alice]) {
      submitted.push((await submitJob({ url, token, kind: "no-such-kind", input: {} })).jobId);
    }
    const first = await listJobs({ url, token: alice }, { limit: 2 });
    expect(first.jobs.map((job) => job.jobId)).toEqual([submitted[3], submitted[1]]);
    expect(first.more).toBe(true);
    expect(first.jobs[0]).toMatchObject({ status: "queued", kind: "no-such-kind", attempts: 0, startedAt: null });
    const rest = await listJobs({ url, token: alice }, { before: first.jobs.at(-1)?.jobId, limit: 2 });
    expect(rest.jobs.map((job) => job.jobId)).toEqual([submitted[0]]);
    expect(rest.more).toBe(false);
    expect((await listJobs({ url, token: shared })).jobs.map((job) => job.jobId)).toEqual([submitted[1]]);
  });
});
