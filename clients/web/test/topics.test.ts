/**
 * Topics changed on a live PgpulseClient against a real server: one socket,
 * exact catch-up, a refused topic rejected in-band, and the change to
 * "every topic" (the only one that reconnects).
 */

import { afterEach, describe, expect, inject, it } from "vitest";
import WebSocket from "ws";

import { PgpulseClient, type WebSocketConstructor } from "../src/client.js";
import { publishEvent } from "../src/http.js";
import { Recorder } from "./support/recorder.js";
import { mintToken, uniqueTenant } from "./support/token.js";

const url = inject("pgpulseUrl");
const recorders: Recorder[] = [];

afterEach(() => {
  for (const recorder of recorders.splice(0)) recorder.stop();
});

function tracked(): { WebSocket: WebSocketConstructor; urls: string[] } {
  const urls: string[] = [];
  class Tracked extends WebSocket {
    constructor(address: string) {
      super(address);
      urls.push(address);
    }
  }
  return { WebSocket: Tracked, urls };
}

describe("topics on a live client", () => {
  it("subscribes and unsubscribes on one socket while both topics are published to", async () => {
    const tenant = uniqueTenant("topics");
    const token = mintToken({ tenant_id: tenant, scope: "publish" });
    const topicOf = new Map<number, string>();
    let stop = false;
    const publishing = (async () => {
      for (let n = 0; !stop; n += 1) {
        const topic = n % 3 === 0 ? "b" : "a";
        topicOf.set(await publishEvent({ url, token }, { topic, type: "e", data: { n } }), topic);
      }
    })();
    const sockets = tracked();
    const recorder = new Recorder(new PgpulseClient({ url, token, topics: ["a"], WebSocket: sockets.WebSocket }));
    recorders.push(recorder);
    const { client } = recorder;
    try {
      await recorder.status("open");
      const start = client.lastEventId ?? 0;
      await recorder.until(() => recorder.events.length >= 10, "ten events of a");
      const subscribed = await client.subscribe(["b"]);
      expect(client.topics).toEqual(["a", "b"]);
      await recorder.until(() => recorder.events.filter((e) => e.topic === "b").length >= 10, "ten events of b");
      const unsubscribed = await client.unsubscribe(["a"]);
      expect(client.topics).toEqual(["b"]);
      await recorder.until(
        () => recorder.events.filter((e) => e.topic === "b" && e.id > (unsubscribed.lastEventId ?? Infinity)).length >= 5,
        "five events of b alone",
      );
      stop = true;
      await publishing;
      const last = Math.max(...[...topicOf].filter(([, topic]) => topic === "b").map(([id]) => id));
      await recorder.eventId(last);

      expect(subscribed.lastEventId).not.toBeNull();
      expect(unsubscribed.lastEventId).not.toBeNull();
      const expected = [...topicOf.keys()]
        .filter((id) => id > start && id <= last)
        .filter((id) =>
          topicOf.get(id) === "a"
            ? id <= (unsubscribed.lastEventId ?? 0)
            : id > (subscribed.lastEventId ?? Infinity),
        )
        .sort((x, y) => x - y);
      expect(recorder.ids).toEqual(expected);
      expect(sockets.urls).toHaveLength(1);
    } finally {
      stop = true;
      await publishing;
    }
  });

  it("rejects a topic the token does not allow, and keeps its socket and topics", async () => {
    const tenant = uniqueTenant("topics-refused");
    const token = mintToken({ tenant_id: tenant, topics: ["a", "b"] });
    const sockets = tracked();
    const recorder = new Recorder(new PgpulseClient({ url, token, topics: ["a"], WebSocket: sockets.WebSocket }));
    recorders.push(recorder);
    await recorder.status("open");
    await expect(recorder.client.subscribe(["b", "secret"])).rejects.toThrow("token does not allow topic(s): secret");
    expect(recorder.client.topics).toEqual(["a"]);
    expect(recorder.client.status).toBe("open");
    const publisher = mintToken({ tenant_id: tenant, scope: "publish" });
    await publishEvent({ url, token: publisher }, { topic: "b", type: "e", data: {} });
    // Once a's marker is here, the server has dispatched everything up to it: b starts after it.
    const marker = await publishEvent({ url, token: publisher }, { topic: "a", type: "e", data: {} });
    await recorder.eventId(marker);
    const answer = await recorder.client.subscribe(["b"]);
    expect(answer.lastEventId).toBe(marker);
    const id = await publishEvent({ url, token: publisher }, { topic: "b", type: "e", data: {} });
    await recorder.eventId(id);
    expect(recorder.ids).toEqual([marker, id]);
    expect(sockets.urls).toHaveLength(1);
  });

  it("reconnects, resuming, only to change to or from every topic", async () => {
    const tenant = uniqueTenant("topics-all");
    const token = mintToken({ tenant_id: tenant, scope: "publish" });
    const sockets = tracked();
    const recorder = new Recorder(new PgpulseClient({ url, token, topics: ["a"], WebSocket: sockets.WebSocket }));
    recorders.push(recorder);
    await recorder.status("open");
    const first = await publishEvent({ url, token }, { topic: "a", type: "e", data: {} });
    await recorder.eventId(first);
    await recorder.client.setTopics(undefined);
    const other = await publishEvent({ url, token }, { topic: "other", type: "e", data: {} });
    await recorder.eventId(other);
    expect(recorder.ids).toEqual([first, other]);
    expect(sockets.urls).toHaveLength(2);
    expect(new URL(sockets.urls[1] ?? "").searchParams.get("topics")).toBeNull();
    expect(new URL(sockets.urls[1] ?? "").searchParams.get("last_event_id")).toBe(String(first));
    await expect(recorder.client.unsubscribe(["a"])).rejects.toThrow("reads every topic");
  });
});
