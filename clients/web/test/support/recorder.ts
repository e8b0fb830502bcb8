/** Records what a client emits, and waits, with a deadline, until a condition on the record holds. */

import type { PgpulseClient, PresenceState, Status } from "../../src/client.js";
import type { PgpulseEvent } from "../../src/protocol.js";

const DEFAULT_TIMEOUT_MS = 15_000;

interface Waiter {
  readonly check: () => boolean;
  readonly resolve: () => void;
}

export class Recorder {
  readonly events: PgpulseEvent[] = [];
  readonly statuses: Status[] = [];
  readonly resets: string[] = [];
  readonly readies: number[] = [];
  readonly errors: Error[] = [];
  readonly presence: PresenceState[] = [];
  readonly #waiters = new Set<Waiter>();
  readonly #stops: (() => void)[];

  constructor(readonly client: PgpulseClient) {
    this.#stops = [
      client.on("event", (event) => this.#record(() => this.events.push(event))),
      client.on("status", (status) => this.#record(() => this.statuses.push(status))),
      client.on("reset", ({ reason }) => this.#record(() => this.resets.push(reason))),
      client.on("ready", ({ lastEventId }) => this.#record(() => this.readies.push(lastEventId))),
      client.on("error", (error) => this.#record(() => this.errors.push(error))),
      client.on("presence", (state) => this.#record(() => this.presence.push(state))),
    ];
  }

  get ids(): number[] {
    return this.events.map((event) => event.id);
  }

  /** Resolves once `check` holds (checked now and after everything the client emits). */
  until(check: () => boolean, what: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; status ${this.client.status}, ` +
              `ids [${this.ids.join(",")}], statuses [${this.statuses.join(",")}]`,
          ),
        );
      }, timeoutMs);
      const waiter: Waiter = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.#waiters.add(waiter);
    });
  }

  status(status: Status, timeoutMs?: number): Promise<void> {
    return this.until(() => this.client.status === status, `status ${status}`, timeoutMs);
  }

  /** Waits for the event with this id (the one a publish returned). */
  eventId(id: number, timeoutMs?: number): Promise<void> {
    return this.until(() => this.events.some((event) => event.id === id), `event ${id}`, timeoutMs);
  }

  stop(): void {
    for (const stop of this.#stops) stop();
    this.client.close();
  }

  #record(push: () => void): void {
    push();
    for (const waiter of [...this.#waiters]) {
      if (waiter.check()) {
        this.#waiters.delete(waiter);
        waiter.resolve();
      }
    }
  }
}
