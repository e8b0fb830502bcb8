/**
 * `@pgpulse/client`: the browser (and Node) client of a pgpulse server.
 *
 * This entry point has no dependencies. React bindings live at
 * `@pgpulse/client/react`, the notification center at
 * `@pgpulse/client/notification-center`, so an app without React never
 * loads it.
 */

export {
  PgpulseClient,
  PgpulseClientError,
  type ClientEventKind,
  type ClientEvents,
  type Disconnect,
  type EventFilter,
  type PgpulseClientOptions,
  type PresenceMember,
  type PresenceState,
  type Status,
  type TopicsAnswer,
  type Unsubscribe,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export type { BackoffOptions } from "./backoff.js";
export {
  createNotification,
  getJob,
  getPosition,
  listEvents,
  listJobs,
  listNotifications,
  publishEvent,
  submitJob,
  PgpulseHttpError,
  PgpulseOriginError,
  type EventToPublish,
  type EventsPage,
  type EventsQuery,
  type HttpOptions,
  type JobSnapshot,
  type JobsPage,
  type JobStatus,
  type JobToSubmit,
  type NotificationCreated,
  type StoredNotification,
  type SubmittedJob,
} from "./http.js";
export {
  WS_1008_POLICY_VIOLATION,
  WS_1012_SERVICE_RESTART,
  WS_1013_TRY_AGAIN_LATER,
  type ControlFrame,
  type PgpulseEvent,
  type ResetReason,
} from "./protocol.js";
export type { TokenProvider, TokenSource } from "./token.js";
export {
  mergeNotifications,
  notificationFromEvent,
  type NotificationData,
  type NotificationItem,
} from "./notifications.js";
export { applyJobEvent, jobFromSnapshot, mergeJobSnapshots, type JobItem, type JobState } from "./aiJobs.js";
export { appendAt, applyJobViewEvent, jobViewFromSnapshot, type JobView } from "./jobView.js";
