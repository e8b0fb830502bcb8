/**
 * The console in a real Chromium against a real `pgpulse serve --workers 2`
 * and a real `pgpulse worker`: sign in with an admin token, see both serving
 * processes and the job worker, see the connections of two tenants opened by
 * real clients, publish from the page into a tenant's live stream (and a real
 * /ws client's), run a `sleep` job to completion, watch the events/s chart
 * follow a load, and a token without the admin scope turned away; disconnect
 * a real /ws client's user, then the whole tenant the page watches, from the
 * keyboard. It saves screenshots at a laptop's and a phone's width in
 * e2e-artifacts/.
 */

import { mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";

import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";

import { removeDataDir, startServer, startWorker, type RunningServer, type RunningWorker } from "../test/support/server.js";
import { mintToken, uniqueTenant } from "../test/support/token.js";
import { launchChromium } from "./support/browser.js";

const UI_TIMEOUT_MS = 30_000; // nodes report every 2 s and the page polls every 2 s
const ARTIFACTS = fileURLToPath(new URL("../e2e-artifacts/", import.meta.url));
const LOAD_EVENTS = 240;
const LOAD_BATCH = 20;
const LOAD_PAUSE_MS = 100; // about 240 events over 1.2 s: 100-200 events/s
const LOADED_RATE = 25; // events/s the chart must reach: far above the test's other traffic
const SHARED_DATABASE = (process.env.PGPULSE_TEST_DATABASE_URL ?? "") !== "";

let server: RunningServer | undefined;
let worker: RunningWorker | undefined;
let browser: Browser | undefined;

beforeAll(async () => {
  server = await startServer({ workers: 2 });
  worker = await startWorker(server.dataDir);
  browser = await launchChromium();
  await mkdir(ARTIFACTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await worker?.stop();
  await server?.stop();
  if (server !== undefined) await removeDataDir(server.dataDir);
});

function running(): { server: RunningServer; worker: RunningWorker; browser: Browser } {
  if (server === undefined || worker === undefined || browser === undefined) throw new Error("setup did not finish");
  return { server, worker, browser };
}

const adminToken = (): string => mintToken({ tenant_id: "*", scope: "admin" });

interface Console {
  readonly page: Page;
  readonly errors: string[];
  /** Every URL the page asked for: all must be the server's own. */
  readonly requests: string[];
}

async function openConsole(token: string, width = 1280): Promise<Console> {
  const { browser, server } = running();
  const page = await browser.newPage({ viewport: { width, height: 900 } });
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  const errors: string[] = [];
  const requests: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("request", (request) => requests.push(request.url()));
  page.on("websocket", (socket) => requests.push(socket.url()));
  await page.goto(`${server.url}/console#token=${token}`);
  return { page, errors, requests };
}

/** A real /ws client of one tenant: its frames, how the server closed it, and a way to wait for one. */
interface Socket {
  readonly frames: Array<Record<string, unknown>>;
  /** The close code and reason, once closed. */
  readonly closed: () => { code: number; reason: string } | null;
  close(): void;
}

async function openSocket(token: string): Promise<Socket> {
  const { server } = running();
  const frames: Array<Record<string, unknown>> = [];
  let closed: { code: number; reason: string } | null = null;
  const socket = new WebSocket(`${server.url.replace("http", "ws")}/ws?token=${token}`);
  socket.on("message", (data) => frames.push(JSON.parse(String(data)) as Record<string, unknown>));
  socket.on("close", (code, reason) => {
    closed = { code, reason: reason.toString() };
  });
  await waitUntil(() => frames.some((frame) => frame.op === "ready"), "the socket's ready frame");
  return { frames, closed: () => closed, close: () => socket.close() };
}

/** An SSE stream of one tenant, read until closed. */
async function openSse(token: string): Promise<{ close(): void }> {
  const { server } = running();
  const abort = new AbortController();
  const response = await fetch(`${server.url}/sse?token=${token}`, { signal: abort.signal });
  expect(response.status).toBe(200);
  const reader = response.body?.getReader();
  let text = "";
  void (async () => {
    try {
      for (;;) {
        const chunk = await reader?.read();
        if (chunk === undefined || chunk.done) return;
        text += new TextDecoder().decode(chunk.value);
      }
    } catch {
      // aborted at the end of the test
    }
  })();
  await waitUntil(() => text.includes('"op":"ready"'), "the SSE stream's ready frame");
  return { close: () => abort.abort() };
}

async function waitUntil(check: () => boolean, what: string, timeoutMs = UI_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function publishEvent(token: string, data: unknown): Promise<number> {
  const response = await fetch(`${running().server.url}/api/events`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ topic: "load", type: "load", data }),
  });
  expect(response.status).toBe(201);
  return ((await response.json()) as { event_id: number }).event_id;
}

describe("the console in Chromium", () => {
  it("turns away tokens without the admin scope", async () => {
    const tenantToken = mintToken({ tenant_id: uniqueTenant("console"), scope: "publish" });
    const { page, errors } = await openConsole(tenantToken);
    try {
      await page.waitForSelector("#login:not([hidden])");
      expect(await page.textContent("#login-error")).toMatch(/lacks the admin scope/);
      expect(await page.isHidden("#app")).toBe(true);
      // Focus lands on the token field, ready for a better token.
      expect(await page.evaluate(() => document.activeElement?.id)).toBe("login-token");
      const response = await fetch(`${running().server.url}/api/admin/overview`, {
        headers: { Authorization: `Bearer ${tenantToken}` },
      });
      expect(response.status).toBe(403);
      expect((await fetch(`${running().server.url}/api/admin/overview`)).status).toBe(401);

      // The form: a wrong token, then the right one, typed with the keyboard.
      await page.fill("#login-token", "not-a-token");
      await page.press("#login-token", "Enter");
      await page.waitForFunction(() => /Token refused/.test(document.getElementById("login-error")?.textContent ?? ""));
      await page.fill("#login-token", adminToken());
      await page.press("#login-token", "Enter");
      await page.waitForSelector("#app:not([hidden])");
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it("shows the cluster live and drives a tenant from the page", async () => {
    const { server, worker } = running();
    const prefix = uniqueTenant("console");
    const [tenantA, tenantB] = [`${prefix}-a`, `${prefix}-b`];
    const tokenA = mintToken({ tenant_id: tenantA, scope: "publish" });
    const tokenB = mintToken({ tenant_id: tenantB });
    const { page, errors, requests } = await openConsole(adminToken());
    const sockets: Socket[] = [];
    let sse: { close(): void } | undefined;
    try {
      // Signed in, and the token is gone from the address bar.
      await page.waitForSelector("#app:not([hidden])");
      expect(page.url()).toBe(`${server.url}/console`);

      // Both serving processes and the job worker, up and ready.
      await page.waitForFunction(
        ([workerPid, exact]) => {
          const servers = document.querySelectorAll('#nodes tr[data-kind="server"][data-up="true"][data-ready="true"]').length;
          const worker = [...document.querySelectorAll('#nodes tr[data-kind="worker"][data-ready="true"]')].some((row) =>
            (row.getAttribute("data-node-id") ?? "").includes(`:${workerPid}:`),
          );
          return (exact ? servers === 2 : servers >= 2) && worker;
        },
        [worker.pid, !SHARED_DATABASE] as const,
      );
      expect(await page.textContent("#cluster-status")).toMatch(/2 of 2 servers up/);

      // Two tenants' sockets, opened by real clients: the counts appear, summed over both processes.
      sockets.push(await openSocket(tokenA), await openSocket(tokenA), await openSocket(tokenB));
      sse = await openSse(tokenB);
      await page.fill("#tenant-query", prefix);
      await page.waitForSelector(`#tenants tr[data-tenant="${tenantA}"][data-ws="2"][data-sse="0"]`);
      await page.waitForSelector(`#tenants tr[data-tenant="${tenantB}"][data-ws="1"][data-sse="1"]`);
      await page.waitForFunction(() => /[0-9]/.test(document.querySelector("#card-connections [data-value]")?.textContent ?? ""));

      // Watch tenant A from its row, and publish a notification from the page.
      await page.click(`#tenants tr[data-tenant="${tenantA}"] button`);
      await page.waitForSelector('#stream-status[data-state="live"]');
      const message = `hello from the console ${prefix}`;
      await page.fill("#publish-message", message);
      await page.click('#publish-form button[type="submit"]');
      const shown = await page.waitForSelector('#stream li[data-type="notification"]');
      const eventId = Number(await shown.getAttribute("data-event-id"));
      expect(await shown.textContent()).toContain(message);
      await waitUntil(() => sockets[0]?.frames.some((frame) => frame.id === eventId) ?? false, "the event on the real /ws client");
      const received = sockets[0]?.frames.find((frame) => frame.id === eventId);
      expect(received).toMatchObject({ tenant_id: tenantA, type: "notification", data: { message } });
      expect(sockets[2]?.frames.some((frame) => frame.id === eventId && frame.tenant_id === tenantA)).toBe(false);

      // A sleep job from the page: its bar moves, then completes.
      await page.fill("#job-kind", "sleep");
      await page.fill("#job-input", '{"seconds": 3, "steps": 6}');
      await page.click('#job-form button[type="submit"]');
      const job = await page.waitForSelector("#my-jobs li[data-job-id]");
      const jobId = (await job.getAttribute("data-job-id")) ?? "";
      expect(jobId).not.toBe("");
      const row = `#my-jobs li[data-job-id="${jobId}"]`;
      await page.waitForFunction((selector) => {
        const item = document.querySelector(selector);
        const value = item?.querySelector("progress")?.value ?? 0;
        return item?.getAttribute("data-state") === "running" && value > 0 && value < 1;
      }, row);
      await page.waitForSelector(`${row}[data-state="complete"]`);
      expect(await page.$eval(`${row} progress`, (bar) => (bar as HTMLProgressElement).value)).toBe(1);
      await page.waitForSelector(`#recent-jobs li[data-job-id="${jobId}"][data-state="complete"]`);

      // The retained history shows the notification too.
      await page.waitForSelector(`#history tr[data-event-id="${eventId}"]`);

      // Load: the events/s chart climbs with it.
      const before = Number(await page.getAttribute('#chart-events svg', "data-peak"));
      expect(before).toBeLessThan(LOADED_RATE);
      for (let sent = 0; sent < LOAD_EVENTS; sent += LOAD_BATCH) {
        await Promise.all(Array.from({ length: LOAD_BATCH }, (_, i) => publishEvent(tokenA, { n: sent + i })));
        await new Promise((resolve) => setTimeout(resolve, LOAD_PAUSE_MS));
      }
      await waitUntil(() => (sockets[1]?.frames.filter((frame) => frame.topic === "load").length ?? 0) >= LOAD_EVENTS, "the load on a /ws client");
      await page.waitForFunction(
        (rate) => Number(document.querySelector('#chart-events svg')?.getAttribute("data-peak")) >= rate,
        LOADED_RATE,
      );
      // Two sockets and the page's own stream of tenant A each got every event.
      await page.waitForFunction(
        (rate) => Number(document.querySelector('#chart-deliveries svg')?.getAttribute("data-peak")) >= 2 * rate,
        LOADED_RATE,
      );
      expect(await page.$$eval("#chart-events svg polyline", (lines) => lines.length)).toBe(1);

      // Screenshots at a laptop's width and a phone's.
      await page.screenshot({ path: `${ARTIFACTS}console-1280.png`, fullPage: true });
      await page.setViewportSize({ width: 390, height: 844 });
      await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
      await page.screenshot({ path: `${ARTIFACTS}console-390.png`, fullPage: true });

      // Nothing came from anywhere but the server itself.
      const origin = new URL(server.url);
      const foreign = requests.filter((url) => new URL(url).host !== origin.host);
      expect(foreign).toEqual([]);
      // The page's sockets carry tokens of the watched tenant, never an admin token.
      const socketTokens = requests
        .filter((url) => new URL(url).pathname === "/ws")
        .map((url) => new URL(url).searchParams.get("token") ?? "");
      expect(socketTokens.length).toBeGreaterThan(0);
      for (const token of socketTokens) {
        const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as Record<string, unknown>;
        expect(claims.tenant_id).toBe(tenantA);
        expect(String(claims.scope ?? "")).not.toMatch(/admin/);
      }
      expect(errors).toEqual([]);
    } finally {
      for (const socket of sockets) socket.close();
      sse?.close();
      await page.close();
    }
  });

  it("disconnects a user, then the whole tenant it watches, and watches again when asked", async () => {
    const tenant = uniqueTenant("console-disconnect");
    const other = `${tenant}-other`;
    const { page, errors, requests } = await openConsole(adminToken());
    const ann = await openSocket(mintToken({ tenant_id: tenant, sub: "ann" }));
    const bob = await openSocket(mintToken({ tenant_id: tenant, sub: "bob" }));
    const elsewhere = await openSocket(mintToken({ tenant_id: other, sub: "ann" }));
    try {
      await page.waitForSelector("#app:not([hidden])");

      // One user, from the keyboard: type the tenant and the user, then Disconnect… and confirm.
      await page.fill("#watch-tenant", tenant);
      await page.fill("#watch-user", "ann");
      await page.focus("#disconnect");
      await page.keyboard.press("Enter");
      await page.waitForSelector("#disconnect-confirm:not([hidden])");
      expect(await page.textContent("#disconnect-question")).toContain(`user ann of tenant ${tenant}`);
      expect(await page.evaluate(() => document.activeElement?.id)).toBe("disconnect-yes");
      // Escape withdraws the question, and focus goes back to where it was asked.
      await page.keyboard.press("Escape");
      await page.waitForSelector("#disconnect-confirm[hidden]", { state: "attached" });
      expect(await page.evaluate(() => document.activeElement?.id)).toBe("disconnect");
      expect(ann.closed()).toBeNull();
      await page.keyboard.press("Enter");
      await page.waitForSelector("#disconnect-confirm:not([hidden])");
      await page.screenshot({ path: `${ARTIFACTS}console-disconnect-1280.png` });
      await page.keyboard.press("Enter");
      await page.waitForFunction(
        (text) => document.getElementById("disconnect-result")?.textContent === text,
        `Disconnect sent to user ann of tenant ${tenant}.`,
      );
      await waitUntil(() => ann.closed() !== null, "ann's socket to close");
      expect(ann.closed()).toEqual({ code: 1008, reason: "disconnected by the operator" });
      expect(bob.closed()).toBeNull();
      expect(elsewhere.closed()).toBeNull(); // the same user id in another tenant

      // The whole tenant, while the page watches it: its own socket is closed too, and it says so.
      await page.fill("#watch-user", "");
      await page.click('#watch-form button[type="submit"]');
      await page.waitForSelector('#stream-status[data-state="live"]');
      const watchSockets = (): number => requests.filter((url) => new URL(url).pathname === "/ws").length;
      const opened = watchSockets();
      await page.click("#disconnect");
      expect(await page.textContent("#disconnect-question")).toContain(`every user of tenant ${tenant}`);
      await page.click("#disconnect-yes");
      await page.waitForFunction(() =>
        /This page's own watch of the tenant is closed too/.test(document.getElementById("disconnect-result")?.textContent ?? ""),
      );
      await page.waitForSelector('#stream-status[data-state="halted"]');
      expect(await page.textContent("#stream-status")).toContain("Disconnected by the operator");
      expect(await page.textContent("#stream li.notice")).toContain("Disconnected by the operator");
      await waitUntil(() => bob.closed() !== null, "bob's socket to close");
      expect(bob.closed()).toEqual({ code: 1008, reason: "disconnected by the operator" });
      expect(elsewhere.closed()).toBeNull();
      // It stays disconnected until asked: no socket of its own since.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
      await page.locator("#workspace").screenshot({ path: `${ARTIFACTS}console-disconnect-390.png` });
      expect(await page.getAttribute("#stream-status", "data-state")).toBe("halted");
      expect(watchSockets()).toBe(opened);
      await page.click("#watch-resume");
      await page.waitForSelector('#stream-status[data-state="live"]');
      expect(watchSockets()).toBe(opened + 1);
      expect(await page.isHidden("#watch-resume")).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      for (const socket of [ann, bob, elsewhere]) socket.close();
      await page.close();
    }
  });
});
