/**
 * A notification center: a bell with the unread count, the tenant's
 * notifications, live, and the progress of AI jobs.
 *
 * History and the live stream meet without a gap: the history is read only
 * once the subscription is live (`ready`), so a notification created in
 * between arrives by both ways and the merge, keyed by notification id,
 * keeps one. After a `reset` (the server could not resume) the history is
 * read again on the next `ready`, for the same reason. AI jobs are read the
 * same way (`GET /api/jobs`), so a reloaded page shows the jobs it had.
 *
 * Markup only, with `pgpulse-nc` class names to style; no CSS is imposed
 * beyond hiding the screen-reader-only text.
 */

import { useCallback, useEffect, useId, useRef, useState, type CSSProperties, type ReactElement } from "react";

import { applyJobEvent, mergeJobSnapshots, AI_JOBS_TOPIC, type JobItem } from "./aiJobs.js";
import type { PgpulseClientOptions, Status } from "./client.js";
import { listJobs, listNotifications, PgpulseOriginError } from "./http.js";
import {
  mergeNotifications,
  newestId,
  notificationFromEvent,
  notificationFromStored,
  unreadCount,
  NOTIFICATIONS_TOPIC,
  NOTIFICATION_TYPE,
  type NotificationItem,
} from "./notifications.js";
import { usePgpulse, usePgpulseListener } from "./react.js";

export interface NotificationCenterProps
  extends Pick<PgpulseClientOptions, "url" | "token" | "topics" | "path" | "backoff" | "pingIntervalMs" | "pongTimeoutMs" | "WebSocket"> {
  /** Heading and accessible name. Default "Notifications". */
  readonly title?: string;
  /** How many notifications to load from history. Default 50. */
  readonly historyLimit?: number;
  /** How many notifications to keep in the list. Default 100. */
  readonly maxItems?: number;
  /** How many AI jobs to show. Default 5. */
  readonly maxJobs?: number;
  /** Open the panel at first render. Default false. */
  readonly defaultOpen?: boolean;
  /** A localStorage key under which to remember what was read; default: not remembered. */
  readonly storageKey?: string;
  /**
   * Where jobs are listed from (`{jobsUrl}/api/jobs`) when that is not `url`: for
   * pgpulse inside an app under a prefix, whose notification history is the app's
   * own. Default: `url`.
   */
  readonly jobsUrl?: string;
}

const DEFAULT_TITLE = "Notifications";
const DEFAULT_HISTORY_LIMIT = 50;
const DEFAULT_MAX_ITEMS = 100;
const DEFAULT_MAX_JOBS = 5;

const STATUS_TEXT: Record<Status, string> = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  unauthorized: "Signed out: the server refused the token",
  forbidden: "Not allowed to read these topics",
  closed: "Disconnected",
};

const ORIGIN_REFUSED_STATUS = "Live, but the server refuses this page's HTTP calls";

const JOB_STATE_TEXT: Record<JobItem["state"], string> = {
  queued: "queued",
  running: "running",
  complete: "done",
  failed: "failed",
};

const VISUALLY_HIDDEN: CSSProperties = {
  position: "absolute",
  width: 1,
  height: 1,
  margin: -1,
  padding: 0,
  overflow: "hidden",
  clip: "rect(0 0 0 0)",
  whiteSpace: "nowrap",
  border: 0,
};

export function NotificationCenter(props: NotificationCenterProps): ReactElement {
  const title = props.title ?? DEFAULT_TITLE;
  const maxItems = props.maxItems ?? DEFAULT_MAX_ITEMS;
  const maxJobs = props.maxJobs ?? DEFAULT_MAX_JOBS;
  const panelId = useId();

  const { client, status } = usePgpulse({
    url: props.url,
    token: props.token,
    topics: props.topics,
    path: props.path,
    backoff: props.backoff,
    pingIntervalMs: props.pingIntervalMs,
    pongTimeoutMs: props.pongTimeoutMs,
    WebSocket: props.WebSocket,
    keep: 0,
  });
  const [items, setItems] = useState<readonly NotificationItem[]>([]);
  const [jobs, setJobs] = useState<readonly JobItem[]>([]);
  const [open, setOpen] = useState(props.defaultOpen ?? false);
  const [readThrough, setReadThrough] = useReadWatermark(props.storageKey);
  const [announcement, setAnnouncement] = useState("");
  const [historyError, setHistoryError] = useState<string | null>(null);
  // The socket can be live while every HTTP call is refused (CORS): say so, not just "Live".
  const [originError, setOriginError] = useState<string | null>(null);

  const latestProps = useRef(props);
  useEffect(() => {
    latestProps.current = props;
  });
  const needsHistory = useRef(true);
  const pendingHistory = useRef<AbortController | null>(null);

  const loadHistory = useCallback(async (): Promise<void> => {
    pendingHistory.current?.abort();
    const controller = new AbortController();
    pendingHistory.current = controller;
    needsHistory.current = false;
    const { url, token, historyLimit, jobsUrl } = latestProps.current;
    try {
      const [stored, recentJobs] = await Promise.all([
        listNotifications({ url, token, signal: controller.signal }, { limit: historyLimit ?? DEFAULT_HISTORY_LIMIT }),
        listJobs({ url: jobsUrl ?? url, token, signal: controller.signal }, { limit: maxJobs }),
      ]);
      setItems((current) => mergeNotifications(current, stored.map(notificationFromStored), maxItems));
      setJobs((current) => mergeJobSnapshots(current, recentJobs.jobs, maxJobs));
      setHistoryError(null);
      setOriginError(null);
    } catch (error) {
      if (controller.signal.aborted) return;
      needsHistory.current = true;
      const message = error instanceof Error ? error.message : String(error);
      setHistoryError(message);
      setOriginError(error instanceof PgpulseOriginError ? message : null);
    }
  }, [maxItems, maxJobs]);

  useEffect(() => () => pendingHistory.current?.abort(), []);

  // A new subscription starts from now: its history is read once it is live.
  useEffect(() => {
    needsHistory.current = true;
    if (client?.status === "open") void loadHistory();
  }, [client, loadHistory]);

  usePgpulseListener(client, "ready", () => {
    if (needsHistory.current) void loadHistory();
  });
  usePgpulseListener(client, "reset", () => {
    needsHistory.current = true;
  });
  usePgpulseListener(
    client,
    "event",
    (event) => {
      const item = notificationFromEvent(event);
      if (item === null) return;
      setItems((current) => mergeNotifications(current, [item], maxItems));
      setAnnouncement(`New notification: ${item.message}`);
    },
    { topic: NOTIFICATIONS_TOPIC, type: NOTIFICATION_TYPE },
  );
  usePgpulseListener(client, "event", (event) => setJobs((current) => applyJobEvent(current, event, maxJobs)), {
    topic: AI_JOBS_TOPIC,
  });

  const unread = unreadCount(items, readThrough);
  const markAllRead = (): void => setReadThrough(newestId(items, readThrough));

  return (
    <section
      className="pgpulse-nc"
      aria-label={title}
      data-status={status}
      data-problem={originError !== null ? "origin-not-allowed" : undefined}
    >
      <button
        type="button"
        className="pgpulse-nc__bell"
        aria-expanded={open}
        aria-controls={panelId}
        aria-label={`${title}, ${unread} unread`}
        onClick={() => setOpen((value) => !value)}
      >
        <BellIcon />
        {unread > 0 ? (
          <span className="pgpulse-nc__badge" data-unread-count={unread} aria-hidden="true">
            {unread}
          </span>
        ) : null}
      </button>
      <span role="status" className="pgpulse-nc__status" data-status={status}>
        {status === "open" && originError !== null ? ORIGIN_REFUSED_STATUS : STATUS_TEXT[status]}
      </span>
      {originError !== null ? (
        <p role="alert" className="pgpulse-nc__problem">
          {originError}
        </p>
      ) : null}
      <div aria-live="polite" style={VISUALLY_HIDDEN}>
        {announcement}
      </div>
      <div id={panelId} className="pgpulse-nc__panel" hidden={!open}>
        <div className="pgpulse-nc__header">
          <h2 className="pgpulse-nc__title">{title}</h2>
          <button type="button" className="pgpulse-nc__mark-read" onClick={markAllRead} disabled={unread === 0}>
            Mark all read
          </button>
        </div>
        {historyError !== null ? (
          <p role="alert" className="pgpulse-nc__error">
            Could not load earlier notifications ({historyError}).{" "}
            <button type="button" onClick={() => void loadHistory()}>
              Retry
            </button>
          </p>
        ) : null}
        {items.length === 0 ? <p className="pgpulse-nc__empty">No notifications yet.</p> : null}
        <ul className="pgpulse-nc__list" aria-label={title}>
          {items.map((item) => {
            const isUnread = item.id > readThrough;
            return (
              <li
                key={item.id}
                className={isUnread ? "pgpulse-nc__item pgpulse-nc__item--unread" : "pgpulse-nc__item"}
                data-notification-id={item.id}
              >
                <span className="pgpulse-nc__message">{item.message}</span>{" "}
                <time className="pgpulse-nc__time" dateTime={item.at}>
                  {formatTime(item.at)}
                </time>
                {isUnread ? <span style={VISUALLY_HIDDEN}> (unread)</span> : null}
              </li>
            );
          })}
        </ul>
        {jobs.length > 0 ? (
          <section className="pgpulse-nc__jobs" aria-label="AI jobs">
            <h3 className="pgpulse-nc__jobs-title">AI jobs</h3>
            <ul className="pgpulse-nc__job-list">
              {jobs.map((job) => (
                <li
                  key={job.jobId}
                  className="pgpulse-nc__job"
                  data-job-id={job.jobId}
                  data-state={job.state}
                  data-attempt={job.attempt}
                >
                  {job.kind !== undefined ? (
                    <>
                      <span className="pgpulse-nc__job-kind">{job.kind}</span>{" "}
                    </>
                  ) : null}
                  <span className="pgpulse-nc__job-id">{job.jobId}</span>{" "}
                  {job.attempt !== undefined && job.attempt > 1 ? (
                    <>
                      <span className="pgpulse-nc__job-attempt">attempt {job.attempt}</span>{" "}
                    </>
                  ) : null}
                  <progress max={1} value={job.progress} aria-label={`Job ${job.jobId} progress`} />{" "}
                  <span className="pgpulse-nc__job-state">
                    {job.state === "running" ? `${Math.round(job.progress * 100)}%` : JOB_STATE_TEXT[job.state]}
                    {job.state === "failed" && job.error !== undefined ? `: ${job.error}` : ""}
                  </span>
                  {job.state === "running" && job.message !== undefined ? (
                    <>
                      {" "}
                      <span className="pgpulse-nc__job-message">{job.message}</span>
                    </>
                  ) : null}
                </li>
              ))}
            </ul>
          </section>
        ) : null}
      </div>
    </section>
  );
}

/** Drawn rather than an emoji, which not every system has a font for. */
function BellIcon(): ReactElement {
  return (
    <svg viewBox="0 0 24 24" width="1em" height="1em" aria-hidden="true" focusable="false">
      <path
        fill="currentColor"
        d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6v-5a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2z"
      />
    </svg>
  );
}

/** The highest notification id marked read, remembered in localStorage when a key is given. */
function useReadWatermark(storageKey: string | undefined): [number, (value: number) => void] {
  const [value, setValue] = useState(() => readStored(storageKey));
  useEffect(() => {
    setValue(readStored(storageKey));
  }, [storageKey]);
  const update = useCallback(
    (next: number) => {
      setValue(next);
      if (storageKey !== undefined && typeof localStorage !== "undefined") {
        try {
          localStorage.setItem(storageKey, String(next));
        } catch {
          // Storage full or denied: the watermark lasts for this page only.
        }
      }
    },
    [storageKey],
  );
  return [value, update];
}

function readStored(storageKey: string | undefined): number {
  if (storageKey === undefined || typeof localStorage === "undefined") return 0;
  try {
    const stored = Number(localStorage.getItem(storageKey));
    return Number.isSafeInteger(stored) && stored > 0 ? stored : 0;
  } catch {
    return 0;
  }
}

function formatTime(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
}
