/** The pure parts: frame parsing, back-off, the notification list, AI job rows. No server involved. */

import { describe, expect, it } from "vitest";

import { applyJobEvent, mergeJobSnapshots, type JobItem } from "../src/aiJobs.js";
import type { JobSnapshot } from "../src/http.js";
import { appendAt, applyJobViewEvent, loadingJob, type JobView } from "../src/jobView.js";
import { Backoff } from "../src/backoff.js";
import { mergeNotifications, newestId, notificationFromEvent, unreadCount } from "../src/notifications.js";
import { parseFrame, type PgpulseEvent } from "../src/protocol.js";

function event(id: number, topic: string, type: string, data: unknown): PgpulseEvent {
  return { id, key: id, tenant_id: "t", topic, type, data, ts: "2024-01-01T00:00:00Z" };
}

describe("parseFrame", () => {
  it("reads the answers to topic requests, with their ref", () => {
    expect(parseFrame('{"op":"subscribed","topics":["b"],"last_event_id":9,"ref":3}')).toEqual({
      kind: "control",
      control: { op: "subscribed", topics: ["b"], last_event_id: 9, ref: 3 },
    });
    expect(parseFrame('{"op":"unsubscribed","topics":["a"],"last_event_id":4}')).toEqual({
      kind: "control",
      control: { op: "unsubscribed", topics: ["a"], last_event_id: 4 },
    });
    expect(parseFrame('{"op":"error","message":"no","ref":"x"}')).toEqual({
      kind: "control",
      control: { op: "error", message: "no", ref: "x" },
    });
    expect(parseFrame('{"op":"subscribed","topics":"b","last_event_id":9}').kind).toBe("unknown");
    const member = { id: "m1", user_id: "u", info: { name: "A" }, joined_at: "2024-01-01T00:00:00Z" };
    expect(parseFrame(JSON.stringify({ op: "presence", topic: "room", members: [member], self: "m1", ref: 2 }))).toEqual({
      kind: "control",
      control: { op: "presence", topic: "room", members: [member], self: "m1", ref: 2 },
    });
    expect(parseFrame(JSON.stringify({ op: "presence.left", topic: "room", member }))).toEqual({
      kind: "control",
      control: { op: "presence.left", topic: "room", member },
    });
    expect(parseFrame('{"op":"presence.joined","topic":"room","member":{}}').kind).toBe("unknown");
  });

  it("sorts frames into events, control frames and unknown ones", () => {
    expect(parseFrame('{"id":3,"tenant_id":"t","topic":"a","type":"b","data":{},"ts":"x"}').kind).toBe("event");
    expect(parseFrame('{"op":"ready","last_event_id":7}')).toEqual({
      kind: "control",
      control: { op: "ready", last_event_id: 7 },
    });
    expect(parseFrame('{"op":"reset","reason":"history_expired"}')).toEqual({
      kind: "control",
      control: { op: "reset", reason: "history_expired" },
    });
    expect(parseFrame("not json").kind).toBe("unknown");
    expect(parseFrame('{"op":"ready"}').kind).toBe("unknown");
    expect(parseFrame('{"id":"3","topic":"a","type":"b"}').kind).toBe("unknown");
  });
});

describe("Backoff", () => {
  it("grows by its factor up to the cap, with jitter below the ceiling, and resets", () => {
    const fixed = new Backoff({ initialDelayMs: 100, maxDelayMs: 1_000, factor: 2, jitter: 0 });
    expect([fixed.next(), fixed.next(), fixed.next(), fixed.next(), fixed.next()]).toEqual([100, 200, 400, 800, 1_000]);
    fixed.reset();
    expect(fixed.next()).toBe(100);

    const jittered = new Backoff({ initialDelayMs: 100, jitter: 0.5 }, () => 1);
    expect(jittered.next()).toBe(50);
  });
});

describe("notifications", () => {
  it("merges history and live items by notification id, newest first, capped", () => {
    const live = [{ id: 5, message: "five", at: "t5" }];
    const history = [
      { id: 5, message: "five", at: "t5" },
      { id: 4, message: "four", at: "t4" },
      { id: 3, message: "three", at: "t3" },
    ];
    const merged = mergeNotifications(live, history, 10);
    expect(merged.map((item) => item.id)).toEqual([5, 4, 3]);
    expect(mergeNotifications(merged, history, 10)).toBe(merged);
    expect(mergeNotifications(merged, [{ id: 6, message: "six", at: "t6" }], 2).map((item) => item.id)).toEqual([6, 5]);
  });

  it("counts unread above the read watermark", () => {
    const items = [
      { id: 9, message: "", at: "" },
      { id: 7, message: "", at: "" },
    ];
    expect(unreadCount(items, 0)).toBe(2);
    expect(unreadCount(items, 7)).toBe(1);
    expect(newestId(items, 0)).toBe(9);
    expect(unreadCount(items, newestId(items, 0))).toBe(0);
  });

  it("reads a notification event and ignores anything else", () => {
    expect(notificationFromEvent(event(1, "notifications", "notification", { message: "m", notification_id: 4 }))).toEqual({
      id: 4,
      message: "m",
      at: "2024-01-01T00:00:00Z",
    });
    expect(notificationFromEvent(event(1, "notifications", "other", { message: "m", notification_id: 4 }))).toBeNull();
    expect(notificationFromEvent(event(1, "notifications", "notification", { message: "m" }))).toBeNull();
  });
});

describe("applyJobEvent", () => {
  it("folds a job's events into one row", () => {
    let jobs: readonly JobItem[] = [];
    jobs = applyJobEvent(jobs, event(1, "ai_jobs", "ai_job.started", { job_id: "j1" }), 5);
    jobs = applyJobEvent(jobs, event(2, "ai_jobs", "ai_job.progress", { job_id: "j1", progress: 0.4 }), 5);
    expect(jobs).toMatchObject([{ jobId: "j1", state: "running", progress: 0.4 }]);
    jobs = applyJobEvent(jobs, event(3, "ai_jobs", "ai_job.started", { job_id: "j2" }), 5);
    jobs = applyJobEvent(jobs, event(4, "ai_jobs", "ai_job_complete", { job_id: "j1", result: { text: "ok" } }), 5);
    expect(jobs).toMatchObject([
      { jobId: "j1", state: "complete", progress: 1, result: { text: "ok" } },
      { jobId: "j2", state: "running" },
    ]);
    jobs = applyJobEvent(jobs, event(5, "ai_jobs", "ai_job.failed", { job_id: "j2", error: "boom" }), 5);
    expect(jobs[0]).toMatchObject({ jobId: "j2", state: "failed", error: "boom" });
    expect(applyJobEvent(jobs, event(6, "other", "ai_job.started", { job_id: "j3" }), 5)).toBe(jobs);
  });

  it("starts a row over when its job starts again after a lost worker", () => {
    let jobs: readonly JobItem[] = [];
    jobs = applyJobEvent(jobs, event(1, "ai_jobs", "ai_job.started", { job_id: "j1", kind: "sleep", attempt: 1 }), 5);
    jobs = applyJobEvent(
      jobs,
      event(2, "ai_jobs", "ai_job.progress", { job_id: "j1", progress: 0.5, message: "step 2 of 4" }),
      5,
    );
    expect(jobs).toMatchObject([{ jobId: "j1", kind: "sleep", attempt: 1, progress: 0.5, message: "step 2 of 4" }]);

    jobs = applyJobEvent(jobs, event(3, "ai_jobs", "ai_job.started", { job_id: "j1", kind: "sleep", attempt: 2 }), 5);
    expect(jobs).toEqual([
      { jobId: "j1", kind: "sleep", attempt: 2, state: "running", progress: 0, updatedAt: "2024-01-01T00:00:00Z" },
    ]);
    jobs = applyJobEvent(jobs, event(4, "ai_jobs", "ai_job.progress", { job_id: "j1", progress: 0.25 }), 5);
    expect(jobs).toMatchObject([{ attempt: 2, progress: 0.25 }]);
    expect(jobs[0]?.message).toBeUndefined();

    jobs = applyJobEvent(jobs, event(5, "ai_jobs", "ai_job.failed", { job_id: "j1", error: "ValueError: boom" }), 5);
    expect(jobs).toEqual([
      {
        jobId: "j1",
        kind: "sleep",
        attempt: 2,
        state: "failed",
        progress: 0.25,
        error: "ValueError: boom",
        updatedAt: "2024-01-01T00:00:00Z",
      },
    ]);
  });

  it("adds the jobs of a snapshot that the stream has not mentioned, after the stream's rows", () => {
    const snapshot = (jobId: string, status: JobSnapshot["status"], progress: number): JobSnapshot => ({
      jobId,
      kind: "sleep",
      status,
      progress,
      input: {},
      result: status === "succeeded" ? { ok: true } : null,
      error: status === "failed" ? "boom" : null,
      attempts: status === "queued" ? 0 : 1,
      createdAt: "2024-01-01T00:00:00Z",
      startedAt: status === "queued" ? null : "2024-01-01T00:00:01Z",
      finishedAt: status === "succeeded" || status === "failed" ? "2024-01-01T00:00:02Z" : null,
      text: "",
    });
    let jobs: readonly JobItem[] = applyJobEvent([], event(9, "ai_jobs", "ai_job.progress", { job_id: "live", progress: 0.7 }), 5);
    jobs = mergeJobSnapshots(
      jobs,
      [snapshot("live", "running", 0.5), snapshot("done", "succeeded", 1), snapshot("new", "queued", 0), snapshot("bad", "failed", 0.2)],
      3,
    );
    expect(jobs).toMatchObject([
      { jobId: "live", state: "running", progress: 0.7 },
      { jobId: "done", state: "complete", progress: 1, result: { ok: true }, attempt: 1, updatedAt: "2024-01-01T00:00:02Z" },
      { jobId: "new", state: "queued", progress: 0, updatedAt: "2024-01-01T00:00:00Z" },
    ]);
    expect(mergeJobSnapshots(jobs, [snapshot("live", "succeeded", 1)], 3)).toBe(jobs);
  });
});

describe("a job's view", () => {
  it("appends only what lies past the text, counting code points, and sees gaps", () => {
    expect(appendAt("", 0, "a🙂b")).toBe("a🙂b");
    expect(appendAt("a🙂", 1, "🙂bc")).toBe("a🙂bc"); // the emoji is one character, as in PostgreSQL
    expect(appendAt("a🙂bc", 0, "a🙂")).toBe("a🙂bc"); // already held
    expect(appendAt("a🙂bc", 5, "x")).toBeNull(); // a gap: 4 held, starts at 5
  });

  it("folds a job's events after a snapshot, ignoring the stale ones", () => {
    const out = (id: number, offset: number, text: string): PgpulseEvent =>
      event(id, "ai_jobs", "ai_job.output", { job_id: "j", offset, text });
    let view: JobView | "gap" = { ...loadingJob("j"), status: "running", attempt: 1, text: "hello ", progress: 0.5 };
    view = applyJobViewEvent(view, event(1, "ai_jobs", "ai_job.started", { job_id: "j", attempt: 1 }));
    expect(view).toMatchObject({ text: "hello ", progress: 0.5 }); // the snapshot is newer
    view = applyJobViewEvent(view as JobView, event(2, "ai_jobs", "ai_job.progress", { job_id: "j", progress: 0.25 }));
    expect(view).toMatchObject({ progress: 0.5 });
    view = applyJobViewEvent(view as JobView, out(3, 0, "hello "));
    view = applyJobViewEvent(view as JobView, out(4, 6, "world"));
    expect(view).toMatchObject({ text: "hello world" });
    expect(applyJobViewEvent(view as JobView, out(5, 12, "!"))).toBe("gap");
    expect(applyJobViewEvent(view as JobView, out(5, 1, "x"))).toBe(view);
    expect(applyJobViewEvent(view as JobView, event(5, "ai_jobs", "ai_job.output", { job_id: "other", offset: 0, text: "x" }))).toBe(view);
    view = applyJobViewEvent(view as JobView, event(6, "ai_jobs", "ai_job_complete", { job_id: "j", result: { text: "hello world" } }));
    expect(view).toMatchObject({ status: "succeeded", progress: 1, result: { text: "hello world" } });
    expect(applyJobViewEvent(view as JobView, event(7, "ai_jobs", "ai_job.failed", { job_id: "j", error: "x" }))).toBe(view);
    // A later attempt starts over.
    view = applyJobViewEvent(view as JobView, event(8, "ai_jobs", "ai_job.started", { job_id: "j", attempt: 2 }));
    expect(view).toMatchObject({ status: "running", attempt: 2, text: "", progress: 0, result: null });
  });
});
