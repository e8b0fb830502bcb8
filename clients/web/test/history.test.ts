/**
 * `listEvents` and `getPosition` against a real server: pages both ways
 * under topic and user rules, and "load a page, then go live from exactly there".
 */

import { afterEach, describe, expect, inject, it } from "vitest";
import WebSocket from "ws";

import { PgpulseClient } from "../src/client.js";
import { getPosition, listEvents, PgpulseHttpError, publishEvent } from "../src/http.js";
import { Recorder } from "./support/recorder.js";
import { mintToken, uniqueTenant } from "./support/token.js";

const url = inject("pgpulseUrl");
const recorders: Recorder[] = [];

afterEach(() => {
  for (const recorder of recorders.splice(0)) recorder.stop();
});

describe("history", () => {
  it("pages back and forward under the token's topics and user", async () => {
    const tenant = uniqueTenant("history");
    const publisher = mintToken({ tenant_id: tenant, scope: "publish" });
    const plan: [string, string | undefined][] = [];
    for (let i = 0; i < 12; i += 1) plan.push([i % 3 === 0 ? "b" : "a", i % 4 === 1 ? (i % 8 === 1 ? "alice" : "bob") : undefined]);
    const ids: number[] = [];
    for (const [topic, user] of plan) {
      ids.push(await publishEvent({ url, token: publisher }, { topic, type: "e", data: {}, ...(user === undefined ? {} : { user_id: user }) }));
    }
    const token = mintToken({ tenant_id: tenant, sub: "alice", topics: ["a"] });
    const expected = ids.filter((_, i) => plan[i]?.[0] === "a" && (plan[i]?.[1] === undefined || plan[i]?.[1] === "alice"));

    const back: number[][] = [];
    let page = await listEvents({ url, token }, { limit: 2 });
    back.push(page.events.map((event) => event.id));
    while (page.more) {
      page = await listEvents({ url, token }, { limit: 2, before: page.events[0]?.id });
      back.push(page.events.map((event) => event.id));
    }
    expect(back.reverse().flat()).toEqual(expected);
    expect(page.lastEventId).toBe(ids.at(-1));

    const forward: number[] = [];
    let after = 0;
    for (;;) {
      const next = await listEvents({ url, token }, { limit: 3, after });
      forward.push(...next.events.map((event) => event.id));
      if (!next.more) break;
      after = next.events.at(-1)?.id ?? after;
    }
    expect(forward).toEqual(expected);
    expect(await getPosition({ url, token })).toBe(ids.at(-1));

    const refused = await listEvents({ url, token }, { topics: ["b"] }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(PgpulseHttpError);
    expect((refused as PgpulseHttpError).status).toBe(403);
  });

  it("loads a page, then streams from exactly where it ended", async () => {
    const tenant = uniqueTenant("load-then-stream");
    const token = mintToken({ tenant_id: tenant, scope: "publish" });
    const publish = (n: number): Promise<number> => publishEvent({ url, token }, { topic: "t", type: "e", data: { n } });
    const early = [await publish(1), await publish(2), await publish(3)];
    const page = await listEvents({ url, token });
    const missed = [await publish(4), await publish(5)]; // after the page, before the client
    const client = new PgpulseClient({ url, token, WebSocket, lastEventId: page.lastEventId });
    const recorder = new Recorder(client);
    recorders.push(recorder);
    await recorder.status("open");
    const live = await publish(6);
    await recorder.eventId(live);
    expect(page.events.map((event) => event.id)).toEqual(early);
    expect(recorder.ids).toEqual([...missed, live]);
  });
});
