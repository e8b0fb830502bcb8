/**
 * The notification center's list, as pure functions over immutable arrays.
 *
 * A notification reaches the browser twice when history and the live stream
 * overlap (the history is read after the subscription is live, precisely so
 * that nothing falls between them). Both carry the notification's id, so the
 * list is a union keyed by it. Unread is a watermark, the highest id marked
 * read, because notification ids grow with time.
 */

import type { StoredNotification } from "./http.js";
import type { PgpulseEvent } from "./protocol.js";

export const NOTIFICATIONS_TOPIC = "notifications";
export const NOTIFICATION_TYPE = "notification";

/** The data of a `notification` event. */
export interface NotificationData {
  readonly message: string;
  readonly notification_id: number;
}

export interface NotificationItem {
  /** The notification's id (not the event's). */
  readonly id: number;
  readonly message: string;
  /** ISO-8601 time. */
  readonly at: string;
}

/** The item a `notification` event carries, or null for any other event or a malformed one. */
export function notificationFromEvent(event: PgpulseEvent): NotificationItem | null {
  if (event.topic !== NOTIFICATIONS_TOPIC || event.type !== NOTIFICATION_TYPE) return null;
  const data = event.data as Partial<NotificationData> | null;
  if (data === null || typeof data !== "object") return null;
  if (typeof data.notification_id !== "number" || typeof data.message !== "string") return null;
  return { id: data.notification_id, message: data.message, at: event.ts };
}

export function notificationFromStored(stored: StoredNotification): NotificationItem {
  return { id: stored.id, message: stored.message, at: stored.created_at };
}

/** The union of both lists by id, newest first, at most `max` long. Returns `current` itself when nothing is new. */
export function mergeNotifications(
  current: readonly NotificationItem[],
  incoming: readonly NotificationItem[],
  max: number,
): readonly NotificationItem[] {
  const known = new Set(current.map((item) => item.id));
  const fresh: NotificationItem[] = [];
  for (const item of incoming) {
    if (known.has(item.id)) continue;
    known.add(item.id);
    fresh.push(item);
  }
  if (fresh.length === 0) return current;
  return [...current, ...fresh].sort((a, b) => b.id - a.id).slice(0, Math.max(0, max));
}

export function unreadCount(items: readonly NotificationItem[], readThrough: number): number {
  return items.reduce((count, item) => count + (item.id > readThrough ? 1 : 0), 0);
}

/** The watermark that marks every listed item read. */
export function newestId(items: readonly NotificationItem[], readThrough: number): number {
  return items.reduce((newest, item) => Math.max(newest, item.id), readThrough);
}
