/**
 * PgpulseClient against a real pgpulse server (started by globalSetup):
 * order, resume, refusal, reset, tenant and user routing, keepalive.
 */

import { afterEach, describe, expect, inject, it } from "vitest";
import WebSocket from "ws";

import { PgpulseClient, type PgpulseClientOptions, type WebSocketConstructor } from "../src/client.js";
import { createNotification, listNotifications, publishEvent, PgpulseHttpError } from "../src/http.js";
import { WS_1012_SERVICE_RESTART } from "../src/protocol.js";
import { Recorder } from "./support/recorder.js";
import { removeDataDir, startServer } from "./support/server.js";
import { mintToken, uniqueTenant } from "./support/token.js";

const url = inject("pgpulseUrl");
const FAST_BACKOFF = { initialDelayMs: 50, maxDelayMs: 500 } as const;
// How long a refused client is watched for a retry it must not make: ten of
// FAST_BACKOFF's first delays, so a reconnect loop would have shown itself.
const NO_RETRY_WINDOW_MS = 1_000;

/** The `ws` package's WebSocket, recording every socket the client opens. */
function trackedWebSocket(): { WebSocket: WebSocketConstructor; sockets: { url: string; socket: WebSocket }[] } {
  const sockets: { url: string; socket: WebSocket }[] = [];
  class Tracked extends WebSocket {
    constructor(address: string) {
      super(address);
      sockets.push({ url: address, socket: this });
    }
  }
  return { WebSocket: Tracked, sockets };
}

const recorders: Recorder[] = [];

function connect(options: Partial<PgpulseClientOptions>): Recorder {
  const client = new PgpulseClient({ url, WebSocket, backoff: FAST_BACKOFF, ...options });
  const recorder = new Recorder(client);
  recorders.push(recorder);
  return recorder;
}

afterEach(() => {
  for (const recorder of recorders.splice(0)) recorder.stop();
});

function publisher(tenant: string, sub?: string): { token: string; publish: (type: string, data?: unknown, userId?: string) => Promise<number> } {
  const token = mintToken({ tenant_id: tenant, sub, scope: "publish" });
  return {
    token,
    publish: (type, data = {}, userId) =>
      publishEvent({ url, token }, { topic: "tests", type, data, ...(userId === undefined ? {} : { user_id: userId }) }),
  };
}

function strictlyIncreasing(ids: readonly number[]): boolean {
  return ids.every((id, index) => index === 0 || id > (ids[index - 1] ?? Infinity));
}

describe("PgpulseClient", () => {
  it("delivers events in id order, each once, and filters listeners by type", async () => {
    const tenant = uniqueTenant("order");
    const { token, publish } = publisher(tenant);
    const all = connect({ token });
    const onlyB: number[] = [];
    all.client.on("event", (event) => onlyB.push(event.id), { type: "b" });
    await all.status("open");
    expect(all.client.lastEventId).toBe(0);

    // Concurrent publishers: ids come out in commit order whatever the order of the requests.
    const published = await Promise.all(Array.from({ length: 30 }, (_, i) => publish(i % 3 === 0 ? "b" : "a", { i })));
    const last = Math.max(...published);
    await all.eventId(last);

    expect(all.ids).toEqual([...published].sort((x, y) => x - y));
    expect(strictlyIncreasing(all.ids)).toBe(true);
    expect(all.events.every((event) => event.tenant_id === tenant && event.topic === "tests")).toBe(true);
    expect(onlyB).toEqual(all.events.filter((event) => event.type === "b").map((event) => event.id));
    expect(all.client.lastEventId).toBe(last);
  });

  it("resumes after its socket is dropped: no gap, no duplicate", async () => {
    const tenant = uniqueTenant("resume");
    const { token, publish } = publisher(tenant);
    const tracked = trackedWebSocket();
    // A fixed first delay, long enough that the events below are published while it is away.
    const recorder = connect({ token, WebSocket: tracked.WebSocket, backoff: { initialDelayMs: 2_500, jitter: 0 } });
    await recorder.status("open");

    const before = [await publish("before", { n: 1 }), await publish("before", { n: 2 })];
    await recorder.eventId(before[1] ?? 0);

    tracked.sockets[0]?.socket.terminate(); // no close frame: what a lost network looks like
    await recorder.status("reconnecting");
    const during = [];
    for (let n = 0; n < 5; n += 1) during.push(await publish("during", { n }));
    expect(recorder.client.status).toBe("reconnecting");

    await recorder.status("open");
    const after = await publish("after");
    await recorder.eventId(after);

    expect(recorder.ids).toEqual([...before, ...during, after]);
    expect(tracked.sockets).toHaveLength(2);
    expect(new URL(tracked.sockets[1]?.url ?? "").searchParams.get("last_event_id")).toBe(String(before[1]));
  });

  it("reconnects and resumes across a server restart (1012)", async () => {
    const server = await startServer();
    try {
      const tenant = uniqueTenant("restart");
      const token = mintToken({ tenant_id: tenant, scope: "publish" });
      const publish = (n: number): Promise<number> =>
        publishEvent({ url: server.url, token }, { topic: "tests", type: "restart", data: { n } });
      const closes: number[] = [];
      const recorder = connect({ url: server.url, token, backoff: { initialDelayMs: 200, maxDelayMs: 1_000 } });
      recorder.client.on("disconnect", ({ code }) => closes.push(code));
      await recorder.status("open");
      const first = await publish(1);
      await recorder.eventId(first);

      await server.stop();
      await recorder.until(() => closes.length > 0, "the close of the server's shutdown");
      expect(closes[0]).toBe(WS_1012_SERVICE_RESTART);
      const restarted = await startServer({ port: server.port, dataDir: server.dataDir });
      try {
        const second = await publish(2);
        await recorder.eventId(second, 30_000);
        const third = await publish(3);
        await recorder.eventId(third);
        expect(recorder.ids).toEqual([first, second, third]);
      } finally {
        await restarted.stop();
      }
    } finally {
      await server.stop();
      await removeDataDir(server.dataDir);
    }
  });

  it("stops on a refused token instead of retrying it", async () => {
    const tracked = trackedWebSocket();
    const badSignature = mintToken({ tenant_id: uniqueTenant("bad") }, "a-different-secret-of-at-least-32-bytes!!");
    const recorder = connect({ token: badSignature, WebSocket: tracked.WebSocket });
    await recorder.status("unauthorized");
    await new Promise((resolve) => setTimeout(resolve, NO_RETRY_WINDOW_MS));
    expect(recorder.client.status).toBe("unauthorized");
    expect(tracked.sockets).toHaveLength(1);
    expect(recorder.events).toEqual([]);

    const expired = connect({ token: mintToken({ tenant_id: uniqueTenant("exp"), ttlSeconds: -60 }) });
    await expired.status("unauthorized");
  });

  it("without a token sends none (cookies authenticate), and stops when refused", async () => {
    // pgpulse serve authenticates by token only, so a cookie-less socket is refused:
    // the client must neither invent a token nor retry what cannot change by itself.
    const tracked = trackedWebSocket();
    const recorder = connect({ token: undefined, WebSocket: tracked.WebSocket });
    await recorder.status("unauthorized");
    await new Promise((resolve) => setTimeout(resolve, NO_RETRY_WINDOW_MS));
    expect(recorder.client.status).toBe("unauthorized");
    expect(tracked.sockets).toHaveLength(1);
    expect(new URL(tracked.sockets[0]?.url ?? "").searchParams.has("token")).toBe(false);

    const sent: (string | null)[] = [];
    const recordingFetch: typeof fetch = (input, init) => {
      sent.push(new Headers(init?.headers).get("authorization"));
      return fetch(input, init);
    };
    const refused = listNotifications({ url, fetch: recordingFetch });
    await expect(refused).rejects.toMatchObject({ status: 401 });
    expect(sent).toEqual([null]);
  });

  it("retries a refused token only when the token function gives a new one", async () => {
    const tenant = uniqueTenant("refresh");
    const tracked = trackedWebSocket();
    const stale = mintToken({ tenant_id: tenant, ttlSeconds: -60 });
    let calls = 0;
    let secondCall: () => void = () => {};
    const askedAgain = new Promise<void>((resolve) => (secondCall = resolve));
    const recorder = connect({
      WebSocket: tracked.WebSocket,
      token: () => {
        calls += 1;
        if (calls === 2) secondCall();
        return stale;
      },
    });
    await recorder.status("unauthorized");
    await askedAgain; // after the back-off delay it asks for a token, gets the refused one, and stops
    await new Promise((resolve) => setTimeout(resolve, NO_RETRY_WINDOW_MS));
    expect(calls).toBe(2);
    expect(tracked.sockets).toHaveLength(1);
    expect(recorder.client.status).toBe("unauthorized");

    const fresh = mintToken({ tenant_id: tenant });
    let handedOut = 0;
    const renewed = connect({ token: async () => (++handedOut === 1 ? stale : fresh) });
    await renewed.status("open");
    expect(renewed.statuses).toContain("unauthorized");
  });

  it("refreshes a function's token in band before it expires, keeping its one socket", async () => {
    const tenant = uniqueTenant("inband");
    const tracked = trackedWebSocket();
    const { publish } = publisher(tenant);
    let handedOut = 0;
    const recorder = connect({
      WebSocket: tracked.WebSocket,
      token: () => {
        handedOut += 1;
        return mintToken({ tenant_id: tenant, ttlSeconds: 3 });
      },
    });
    await recorder.status("open");
    const first = await publish("before");
    await recorder.eventId(first);
    await new Promise((resolve) => setTimeout(resolve, 4_000)); // past the first token's exp
    const second = await publish("after");
    await recorder.eventId(second);
    expect(tracked.sockets).toHaveLength(1);
    expect(handedOut).toBeGreaterThanOrEqual(2);
    expect(recorder.errors).toEqual([]);
  });

  it("narrows its topics with a refreshed token, and reconnects with what it allows", async () => {
    const tenant = uniqueTenant("narrowed");
    const tracked = trackedWebSocket();
    let handedOut = 0;
    const recorder = connect({
      WebSocket: tracked.WebSocket,
      topics: ["a", "b"],
      token: () => {
        handedOut += 1;
        // The first token expires in 3 s; the one refreshed in band allows only "a".
        return handedOut === 1
          ? mintToken({ tenant_id: tenant, topics: ["a", "b"], ttlSeconds: 3 })
          : mintToken({ tenant_id: tenant, topics: ["a"] });
      },
    });
    await recorder.status("open");
    expect(tracked.sockets).toHaveLength(1);
    const first = tracked.sockets[0]?.socket;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no refreshed frame within 15 s")), 15_000);
      first?.on("message", (data: unknown) => {
        if (String(data).includes('"op":"refreshed"')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    expect(recorder.client.topics).toEqual(["a"]);
    tracked.sockets[0]?.socket.terminate();
    await recorder.until(() => tracked.sockets.length === 2 && recorder.client.status === "open", "open again");
    expect(new URL(tracked.sockets[1]?.url ?? "").searchParams.get("topics")).toBe("a");
    expect(recorder.statuses).not.toContain("forbidden");
  });

  it("reports a topic outside the token's as forbidden", async () => {
    const token = mintToken({ tenant_id: uniqueTenant("topics"), topics: ["allowed"] });
    const recorder = connect({ token, topics: ["secret"] });
    await recorder.status("forbidden");
  });

  it("surfaces a reset and carries on from the server's position", async () => {
    const tenant = uniqueTenant("reset");
    const { token, publish } = publisher(tenant);
    const head = await publish("existing");
    // A position the server never handed out to this tenant: it must say so, not go quiet.
    const recorder = connect({ token, lastEventId: head + 1_000_000 });
    await recorder.status("open");
    expect(recorder.resets).toEqual(["unknown_position"]);
    expect(recorder.readies).toEqual([head]);
    expect(recorder.client.lastEventId).toBe(head);

    const next = await publish("after-reset");
    await recorder.eventId(next);
    expect(recorder.ids).toEqual([next]);
  });

  it("never receives another tenant's events", async () => {
    const a = publisher(uniqueTenant("iso-a"));
    const b = publisher(uniqueTenant("iso-b"));
    const clientA = connect({ token: a.token });
    const clientB = connect({ token: b.token });
    await Promise.all([clientA.status("open"), clientB.status("open")]);

    const ofB = [await b.publish("b"), await b.publish("b"), await b.publish("b")];
    await clientB.eventId(ofB[2] ?? 0);
    const ofA = await a.publish("a");
    await clientA.eventId(ofA);

    expect(clientA.events.map((event) => event.type)).toEqual(["a"]);
    expect(clientB.ids).toEqual(ofB);
  });

  it("delivers a user's events only to that user's connections", async () => {
    const tenant = uniqueTenant("users");
    const { publish } = publisher(tenant);
    const alice = connect({ token: mintToken({ tenant_id: tenant, sub: "alice" }) });
    const bob = connect({ token: mintToken({ tenant_id: tenant, sub: "bob" }) });
    const anonymous = connect({ token: mintToken({ tenant_id: tenant }) });
    await Promise.all([alice.status("open"), bob.status("open"), anonymous.status("open")]);

    const forAlice = await publish("private", { secret: 1 }, "alice");
    // Ids are in order on each connection: once the broadcast after it arrives,
    // the private event would have arrived before it, if it were going to.
    const broadcast = await publish("public");
    await Promise.all([alice.eventId(broadcast), bob.eventId(broadcast), anonymous.eventId(broadcast)]);

    expect(alice.ids).toEqual([forAlice, broadcast]);
    expect(alice.events[0]?.user_id).toBe("alice");
    expect(bob.ids).toEqual([broadcast]);
    expect(anonymous.ids).toEqual([broadcast]);
  });

  it("receives only the topics it asks for, and resumes past skipped ones", async () => {
    const tenant = uniqueTenant("topics");
    const token = mintToken({ tenant_id: tenant, scope: "publish" });
    const tracked = trackedWebSocket();
    const recorder = connect({ token, topics: ["wanted"], WebSocket: tracked.WebSocket });
    await recorder.status("open");
    const on = (topic: string): Promise<number> => publishEvent({ url, token }, { topic, type: "t", data: {} });
    const skipped = await on("other");
    const wanted = await on("wanted");
    await recorder.eventId(wanted);
    expect(recorder.ids).toEqual([wanted]);
    expect(skipped).toBeLessThan(wanted);

    tracked.sockets[0]?.socket.terminate();
    await recorder.status("reconnecting");
    await recorder.status("open");
    expect(new URL(tracked.sockets[1]?.url ?? "").searchParams.get("topics")).toBe("wanted");
    expect(recorder.ids).toEqual([wanted]);
  });

  it("pings when quiet, and gives up a connection that stops answering", async () => {
    const tenant = uniqueTenant("keepalive");
    const { token, publish } = publisher(tenant);
    const tracked = trackedWebSocket();
    const recorder = connect({ token, WebSocket: tracked.WebSocket, pingIntervalMs: 100, pongTimeoutMs: 1_000 });
    await recorder.status("open");

    // Pongs keep a quiet connection: three ping periods later it is the same socket.
    await new Promise<void>((resolve, reject) => {
      let pongs = 0;
      const timer = setTimeout(() => reject(new Error(`${pongs} pongs after 5 s, expected 3`)), 5_000);
      tracked.sockets[0]?.socket.on("message", (data) => {
        if (String(data).includes('"op":"pong"') && ++pongs === 3) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    expect(tracked.sockets).toHaveLength(1);
    expect(recorder.client.status).toBe("open");

    // A socket that stops delivering frames (a dead network, seen from here) is given up and replaced.
    tracked.sockets[0]?.socket.pause();
    const missed = await publish("while-stalled");
    await recorder.status("reconnecting");
    await recorder.eventId(missed);
    expect(tracked.sockets.length).toBeGreaterThanOrEqual(2);
    expect(recorder.ids).toEqual([missed]);
  });

  it("answers the notification endpoints and delivers their events", async () => {
    const tenant = uniqueTenant("notify");
    const token = mintToken({ tenant_id: tenant, scope: "publish" });
    const recorder = connect({ token, topics: ["notifications"] });
    await recorder.status("open");
    const created = await createNotification({ url, token }, "hello");
    await recorder.eventId(created.event_id);
    expect(recorder.events[0]?.data).toEqual({ message: "hello", notification_id: created.id });
    const history = await listNotifications({ url, token }, { limit: 10 });
    expect(history.map((item) => [item.id, item.message])).toEqual([[created.id, "hello"]]);

    const refused = listNotifications({ url, token: "not-a-jwt" });
    await expect(refused).rejects.toBeInstanceOf(PgpulseHttpError);
    await expect(refused).rejects.toMatchObject({ status: 401 });
  });
});
