/** Presence through PgpulseClient against a real server: join, info, leave, refusal, rejoin. */

import { afterEach, describe, expect, inject, it } from "vitest";
import WebSocket from "ws";

import { PgpulseClient, type PresenceState, type WebSocketConstructor } from "../src/client.js";
import { Recorder } from "./support/recorder.js";
import { mintToken, uniqueTenant } from "./support/token.js";

const url = inject("pgpulseUrl");
const recorders: Recorder[] = [];

afterEach(() => {
  for (const recorder of recorders.splice(0)) recorder.stop();
});

function tracked(): { WebSocket: WebSocketConstructor; sockets: WebSocket[] } {
  const sockets: WebSocket[] = [];
  class Tracked extends WebSocket {
    constructor(address: string) {
      super(address);
      sockets.push(this);
    }
  }
  return { WebSocket: Tracked, sockets };
}

/** A client whose latest presence state of "room" is kept, with a way to wait for one. */
function present(tenant: string, user: string, extra: Partial<ConstructorParameters<typeof PgpulseClient>[0]> = {}) {
  const client = new PgpulseClient({
    url,
    token: mintToken({ tenant_id: tenant, sub: user, topics: ["room", "notifications"] }),
    WebSocket,
    backoff: { initialDelayMs: 50, maxDelayMs: 200 },
    ...extra,
  });
  let latest: PresenceState | undefined;
  client.on("presence", (state) => {
    if (state.topic === "room") latest = state;
  });
  const recorder = new Recorder(client); // after: it checks its waits once `latest` is new
  recorders.push(recorder);
  const users = (): string[] => (latest?.members ?? []).map((member) => member.userId ?? "").sort();
  return {
    client,
    users,
    until: (expected: string[]) => recorder.until(() => JSON.stringify(users()) === JSON.stringify(expected), `room: ${expected.join(", ")}`),
    latest: () => latest,
    recorder,
  };
}

describe("presence", () => {
  it("joins, shows info, leaves, and joins again after a reconnect", async () => {
    const tenant = uniqueTenant("presence");
    const sockets = tracked();
    const alice = present(tenant, "alice", { WebSocket: sockets.WebSocket });
    const bob = present(tenant, "bob");
    await alice.client.joinPresence("room", { name: "Alice" });
    await alice.until(["alice"]);
    await bob.client.joinPresence("room", { name: "Bob" });
    await alice.until(["alice", "bob"]);
    await bob.until(["alice", "bob"]);
    const first = alice.latest();
    expect(first?.self).not.toBeNull();
    expect(first?.members.find((member) => member.userId === "bob")?.info).toEqual({ name: "Bob" });
    expect(alice.client.presence("room")?.members).toHaveLength(2);

    // Anyone may ask who is there; a topic the token does not allow is refused.
    const asked = await bob.client.getPresence<{ name: string }>("room");
    expect(asked.map((member) => member.info?.name).sort()).toEqual(["Alice", "Bob"]);
    await expect(bob.client.joinPresence("secret")).rejects.toThrow("token does not allow topic(s): secret");
    expect(bob.client.presence("secret")).toBeUndefined();

    await bob.client.leavePresence("room");
    await alice.until(["alice"]);

    // Alice's connection drops: her new one joins again, and Bob (back) sees one Alice.
    await bob.client.joinPresence("room", { name: "Bob" });
    await alice.until(["alice", "bob"]);
    const before = alice.latest()?.self;
    sockets.sockets[0]?.terminate();
    await alice.recorder.until(
      () => alice.latest()?.self !== before && JSON.stringify(alice.users()) === '["alice","bob"]',
      "alice present again, as a new member",
    );
    await bob.recorder.until(
      () => JSON.stringify(bob.latest()?.members.map((member) => member.id).sort()) === JSON.stringify([alice.latest()?.self, bob.latest()?.self].sort()),
      "bob seeing the new alice, and the old one gone",
    );
    expect(sockets.sockets).toHaveLength(2);
  });
  it("is taken out of a topic that a refreshed token no longer allows", async () => {
    const tenant = uniqueTenant("narrowed");
    let handedOut = 0;
    const alice = present(tenant, "alice", {
      token: () => {
        handedOut += 1;
        // The first token expires in 3 s; the one refreshed in band drops "room".
        return handedOut === 1
          ? mintToken({ tenant_id: tenant, sub: "alice", topics: ["room", "notifications"], ttlSeconds: 3 })
          : mintToken({ tenant_id: tenant, sub: "alice", topics: ["notifications"] });
      },
    });
    const bob = present(tenant, "bob");
    await alice.client.joinPresence("room");
    await bob.client.joinPresence("room");
    await bob.until(["alice", "bob"]);
    await alice.until(["alice", "bob"]);
    await alice.recorder.until(() => alice.latest()?.self === null, "alice out of room after the refresh");
    expect(alice.client.presence("room")).toBeUndefined();
    await bob.until(["bob"]);
    expect(handedOut).toBe(2);
    expect(alice.recorder.errors).toEqual([]);
  });
});
