/**
 * The React hooks in a real Chromium against a real pgpulse server, through
 * the page in `e2e/hooks`: `usePgpulse` changing topics on its open socket,
 * `useJob` joining a streamed answer halfway, and `usePresence` across pages.
 */

import { fileURLToPath } from "node:url";

import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { getJob, publishEvent, submitJob } from "../src/http.js";
import { removeDataDir, startServer, startWorker, type RunningServer } from "../test/support/server.js";
import { mintToken, uniqueTenant } from "../test/support/token.js";
import { buildAndServe, launchChromium, type BuiltPage } from "./support/browser.js";

const UI_TIMEOUT_MS = 20_000;
const HOOKS_PAGE = fileURLToPath(new URL("./hooks", import.meta.url));

let page: BuiltPage | undefined;
let server: RunningServer | undefined;
let browser: Browser | undefined;
const pageErrors: string[] = [];

beforeAll(async () => {
  page = await buildAndServe(HOOKS_PAGE);
  server = await startServer({ allowedOrigins: [page.origin] });
  browser = await launchChromium();
});

afterEach(() => {
  expect(pageErrors.splice(0)).toEqual([]);
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  if (server !== undefined) await removeDataDir(server.dataDir);
  await page?.dispose();
});

function running(): { page: BuiltPage; server: RunningServer; browser: Browser } {
  if (page === undefined || server === undefined || browser === undefined) throw new Error("setup did not finish");
  return { page, server, browser };
}

async function open(view: string, token: string, extra: Record<string, string> = {}): Promise<{ tab: Page; sockets: string[] }> {
  const { page, server, browser } = running();
  const tab = await browser.newPage();
  tab.setDefaultTimeout(UI_TIMEOUT_MS);
  tab.on("pageerror", (error) => pageErrors.push(error.message));
  const sockets: string[] = [];
  tab.on("websocket", (socket) => sockets.push(socket.url()));
  const query = new URLSearchParams({ server: server.url, token, view, ...extra });
  await tab.goto(`${page.origin}/?${query.toString()}`);
  return { tab, sockets };
}

function shownEvents(tab: Page): Promise<{ id: number; topic: string }[]> {
  return tab.$$eval("[data-event-id]", (nodes) =>
    nodes.map((node) => ({ id: Number(node.getAttribute("data-event-id")), topic: node.getAttribute("data-topic") ?? "" })),
  );
}

async function waitForTopicEvents(tab: Page, topic: string, count: number): Promise<void> {
  await tab.waitForFunction(
    ([t, n]) => document.querySelectorAll(`[data-topic="${t}"]`).length >= Number(n),
    [topic, String(count)] as const,
  );
}

describe("hooks in Chromium", () => {
  it("usePgpulse changes topics on its open socket: no reconnect, no gap, no repeat", async () => {
    const { server } = running();
    const tenant = uniqueTenant("e2e-topics");
    const token = mintToken({ tenant_id: tenant, scope: "publish" });
    const topicOf = new Map<number, string>();
    let stop = false;
    const publishing = (async () => {
      for (let n = 0; !stop; n += 1) {
        const topic = n % 2 === 0 ? "a" : "b";
        topicOf.set(await publishEvent({ url: server.url, token }, { topic, type: "e", data: { n } }), topic);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    const { tab, sockets } = await open("topics", token);
    try {
      await tab.waitForSelector('[data-view="topics"][data-status="open"]', { state: "attached" });
      await waitForTopicEvents(tab, "a", 5);
      await tab.click('[data-choose="a,b"]');
      await waitForTopicEvents(tab, "b", 5);
      await tab.click('[data-choose="b"]');
      const aSoFar = (await shownEvents(tab)).filter((event) => event.topic === "a").length;
      await waitForTopicEvents(tab, "b", 15);
      stop = true;
      await publishing;
      const lastB = Math.max(...[...topicOf].filter(([, topic]) => topic === "b").map(([id]) => id));
      await tab.waitForSelector(`[data-event-id="${lastB}"]`, { state: "attached" });

      const shown = await shownEvents(tab);
      const ids = shown.map((event) => event.id);
      expect(ids).toEqual([...new Set(ids)].sort((x, y) => x - y));
      for (const event of shown) expect(event.topic).toBe(topicOf.get(event.id));
      // Each topic is whole between the first and the last of its events shown.
      for (const topic of ["a", "b"]) {
        const mine = shown.filter((event) => event.topic === topic).map((event) => event.id);
        const first = mine[0] ?? 0;
        const last = mine.at(-1) ?? 0;
        const published = [...topicOf].filter(([id, t]) => t === topic && id >= first && id <= last).map(([id]) => id);
        expect(mine, topic).toEqual(published.sort((x, y) => x - y));
      }
      // a stopped: at most what was in flight when the button was clicked came after.
      const aLast = Math.max(...shown.filter((event) => event.topic === "a").map((event) => event.id));
      expect(shown.filter((event) => event.topic === "b" && event.id > aLast).length).toBeGreaterThanOrEqual(5);
      expect(shown.filter((event) => event.topic === "a").length).toBeGreaterThanOrEqual(aSoFar);
      expect(sockets).toHaveLength(1);
    } finally {
      stop = true;
      await publishing;
      await tab.close();
    }
  });

  it("useJob joins a streamed answer halfway: the text so far, then the rest, exactly", async () => {
    const { server } = running();
    const tenant = uniqueTenant("e2e-job");
    const token = mintToken({ tenant_id: tenant, sub: "alice", scope: "jobs" });
    const words = Array.from({ length: 120 }, (_, i) => `wörd${i}${i % 10 === 9 ? "\n" : " "}`);
    const whole = words.join("") + "🙂 end";
    const worker = await startWorker(server.dataDir);
    try {
      const { jobId } = await submitJob({ url: server.url, token, kind: "stream", input: { text: whole, delay: 0.02 } });
      // Halfway: the job has streamed some, not all.
      for (let tries = 0; ; tries += 1) {
        const job = await getJob({ url: server.url, token, jobId });
        if (job.text.length > whole.length / 4) break;
        if (tries > 400) throw new Error(`the job streamed nothing: ${JSON.stringify(job)}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      const { tab, sockets } = await open("job", token, { jobId });
      try {
        const seen: number[] = [];
        const deadline = Date.now() + UI_TIMEOUT_MS;
        for (;;) {
          const state = await tab.$eval("[data-view=job]", (node) => ({
            status: node.getAttribute("data-status"),
            length: (node.textContent ?? "").length,
            loadError: node.getAttribute("data-load-error"),
          }));
          if (state.status === "running") seen.push(state.length);
          if (state.status === "succeeded") break;
          if (Date.now() > deadline) throw new Error(`the page's job is at ${JSON.stringify(state)}`);
          await tab.waitForTimeout(30);
        }
        const text = await tab.$eval("[data-view=job]", (node) => node.textContent);
        expect(text).toBe(whole);
        expect(JSON.parse((await tab.getAttribute("[data-view=job]", "data-result")) ?? "null")).toEqual({ text: whole });
        expect(await tab.getAttribute("[data-view=job]", "data-progress")).toBe("1");
        // It showed the answer growing, starting from the text so far.
        expect(seen.length).toBeGreaterThan(1);
        expect(seen[0]).toBeGreaterThan(0);
        expect(Math.min(...seen)).toBeLessThan(whole.length);
        expect(sockets).toHaveLength(1);
      } finally {
        await tab.close();
      }
    } finally {
      await worker.stop();
    }
  });

  it("usePresence shows who is here, with their info, as they come, change and go", async () => {
    const tenant = uniqueTenant("e2e-presence");
    const names = (tab: Page): Promise<string[]> =>
      tab.$$eval("[data-member-id]", (nodes) => nodes.map((node) => node.getAttribute("data-name") ?? ""));
    const until = (tab: Page, expected: string[]): Promise<unknown> =>
      tab.waitForFunction(
        (want) =>
          JSON.stringify([...document.querySelectorAll("[data-member-id]")].map((n) => n.getAttribute("data-name"))) === want,
        JSON.stringify(expected),
      );
    const alice = await open("presence", mintToken({ tenant_id: tenant, sub: "alice" }), { name: "Alice" });
    try {
      await until(alice.tab, ["Alice"]);
      const self = await alice.tab.getAttribute("[data-view=presence]", "data-self");
      expect(await alice.tab.getAttribute(`[data-member-id="${self}"]`, "data-user")).toBe("alice");
      const bob = await open("presence", mintToken({ tenant_id: tenant, sub: "bob" }), { name: "Bob" });
      await until(bob.tab, ["Alice", "Bob"]);
      await until(alice.tab, ["Alice", "Bob"]);
      await bob.tab.click("[data-rename]");
      await until(alice.tab, ["Alice", "Bob the second"]);
      expect(await names(bob.tab)).toEqual(["Alice", "Bob the second"]);
      // Bob closes his page: Alice sees him go now, not when a TTL runs out.
      const closed = Date.now();
      await bob.tab.close();
      await until(alice.tab, ["Alice"]);
      expect(Date.now() - closed).toBeLessThan(5_000);
      expect(alice.sockets).toHaveLength(1);
      expect(await alice.tab.getAttribute("[data-view=presence]", "data-error")).toBe("");
    } finally {
      await alice.tab.close();
    }
  });
});
