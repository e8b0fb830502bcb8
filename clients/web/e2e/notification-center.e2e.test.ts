/**
 * The notification center in a real Chromium against a real pgpulse server:
 * live notifications with the unread count, a server restart and a network
 * cut survived with every notification shown exactly once, history on load,
 * a job submitted from the page, run by a real `pgpulse worker`, shown from
 * its first progress report to its result, and again after a reload; a
 * streamed answer shown word by word; and a page on an origin the server
 * does not allow, told so (and how to fix it) rather than "Live".
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import type { Browser, BrowserContext, Page } from "playwright-core";
import { build } from "vite";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { createNotification, getJob } from "../src/http.js";
import { freePort, removeDataDir, startServer, startWorker, type RunningServer } from "../test/support/server.js";
import { mintToken, uniqueTenant } from "../test/support/token.js";
import { serveFolder, type StaticServer } from "./support/staticServer.js";
import { launchChromium } from "./support/browser.js";

const UI_TIMEOUT_MS = 20_000;
const DEMO_CONFIG = fileURLToPath(new URL("../vite.demo.config.ts", import.meta.url));

let demoDir: string | undefined;
let demo: StaticServer | undefined;
let server: RunningServer | undefined;
let browser: Browser | undefined;

beforeAll(async () => {
  // A folder of its own, so that runs side by side do not overwrite each other's build.
  demoDir = await mkdtemp(join(tmpdir(), "pgpulse-web-demo-"));
  await build({ configFile: DEMO_CONFIG, logLevel: "warn", build: { outDir: demoDir, emptyOutDir: true } });
  demo = await serveFolder(demoDir);
  server = await startServer({ allowedOrigins: [demo.origin] });
  browser = await launchChromium();
});

afterEach(() => {
  expect(pageErrors.splice(0)).toEqual([]);
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  if (server !== undefined) await removeDataDir(server.dataDir);
  await demo?.close();
  if (demoDir !== undefined) await rm(demoDir, { recursive: true, force: true });
});

function running(): { demo: StaticServer; server: RunningServer; browser: Browser } {
  if (demo === undefined || server === undefined || browser === undefined) throw new Error("setup did not finish");
  return { demo, server, browser };
}

const pageErrors: string[] = [];

interface DemoPage {
  readonly page: Page;
  /** The URL of every WebSocket the page opened. */
  readonly sockets: string[];
}

/**
 * Opens the demo page for `token` (from the allowed origin unless `origin` is
 * given; on the running server unless `extra.server` names another); its
 * uncaught errors land in `pageErrors`.
 */
async function openDemo(
  context: BrowserContext,
  token: string,
  extra: Record<string, string> = {},
  origin: string = running().demo.origin,
): Promise<DemoPage> {
  const { server } = running();
  const page = await context.newPage();
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  page.on("pageerror", (error) => pageErrors.push(error.message));
  const sockets: string[] = [];
  page.on("websocket", (socket) => sockets.push(socket.url()));
  const query = new URLSearchParams({ server: server.url, token, ...extra });
  await page.goto(`${origin}/?${query.toString()}`);
  return { page, sockets };
}

async function waitForStatus(page: Page, status: string): Promise<void> {
  await page.waitForSelector(`.pgpulse-nc[data-status="${status}"]`, { state: "attached" });
}

/** The listed notifications' messages, newest first. */
function messages(page: Page): Promise<string[]> {
  return page.$$eval("[data-notification-id] .pgpulse-nc__message", (nodes) => nodes.map((node) => node.textContent ?? ""));
}

async function waitForMessages(page: Page, count: number): Promise<string[]> {
  await page.waitForFunction((n) => document.querySelectorAll("[data-notification-id]").length >= n, count);
  return messages(page);
}

function unreadBadge(page: Page): Promise<string | null> {
  return page.$eval(".pgpulse-nc", (root) => root.querySelector(".pgpulse-nc__badge")?.textContent ?? null);
}

describe("NotificationCenter in Chromium", () => {
  it("shows each notification once across a server restart and a network cut", async () => {
    const { browser } = running();
    const tenant = uniqueTenant("e2e");
    const token = mintToken({ tenant_id: tenant, scope: "publish" });
    const context = await browser.newContext();
    try {
      const { page, sockets } = await openDemo(context, token, {
        maxDelayMs: "1000",
        pingIntervalMs: "500",
        pongTimeoutMs: "2000",
      });
      await waitForStatus(page, "open");
      const notify = (message: string): Promise<unknown> => createNotification({ url: running().server.url, token }, message);

      await notify("one");
      await waitForMessages(page, 1);
      // The page's own form: a cross-origin POST the server's CORS allows for this origin.
      await page.fill('form[aria-label="Send a notification"] input', "two");
      await page.click('form[aria-label="Send a notification"] button[type="submit"]');
      await waitForMessages(page, 2);
      await notify("three");
      expect(await waitForMessages(page, 3)).toEqual(["three", "two", "one"]);
      // Every event re-rendered the component: none of those renders opened another socket.
      expect(sockets).toHaveLength(1);
      expect(await unreadBadge(page)).toBe("3");
      expect(await page.getAttribute(".pgpulse-nc__bell", "aria-label")).toBe("Notifications, 3 unread");

      // Restart: SIGTERM closes the page's socket with 1012; the same port and
      // data directory bring the same database back.
      const before = running().server;
      await before.stop();
      await waitForStatus(page, "reconnecting");
      server = await startServer({ port: before.port, dataDir: before.dataDir, allowedOrigins: [running().demo.origin] });
      await notify("after restart");
      expect(await waitForMessages(page, 4)).toEqual(["after restart", "three", "two", "one"]);
      await waitForStatus(page, "open");

      // A network cut: the page cannot reach the server while this one is published.
      await context.setOffline(true);
      await waitForStatus(page, "reconnecting");
      await notify("while offline");
      expect(await page.getAttribute(".pgpulse-nc", "data-status")).toBe("reconnecting");
      expect(await messages(page)).toHaveLength(4);
      await context.setOffline(false);
      expect(await waitForMessages(page, 5)).toEqual(["while offline", "after restart", "three", "two", "one"]);
      await waitForStatus(page, "open");
      expect(await unreadBadge(page)).toBe("5");

      await page.click(".pgpulse-nc__mark-read");
      expect(await unreadBadge(page)).toBeNull();
      expect(await page.getAttribute(".pgpulse-nc__bell", "aria-label")).toBe("Notifications, 0 unread");

      // A new page reads the history, and live events still join it once.
      const { page: reloaded } = await openDemo(context, token);
      await waitForStatus(reloaded, "open");
      expect(await waitForMessages(reloaded, 5)).toEqual(["while offline", "after restart", "three", "two", "one"]);
      await notify("six");
      expect(await waitForMessages(reloaded, 6)).toEqual(["six", "while offline", "after restart", "three", "two", "one"]);
      expect(await waitForMessages(page, 6)).toEqual(["six", "while offline", "after restart", "three", "two", "one"]);
      expect(await unreadBadge(page)).toBe("1");
    } finally {
      await context.close();
    }
  });

  it("shows a real job's progress and completion", async () => {
    const { browser, server } = running();
    const tenant = uniqueTenant("e2e-jobs");
    const token = mintToken({ tenant_id: tenant, sub: "alice", scope: "jobs" });
    const worker = await startWorker(server.dataDir);
    const context = await browser.newContext();
    try {
      const { page } = await openDemo(context, token);
      await waitForStatus(page, "open");

      // The page's own form: a cross-origin POST /api/jobs, run by the worker; 6 steps, half a second apart.
      const form = 'form[aria-label="Run a job"]';
      await page.fill(`${form} input[name="seconds"]`, "3");
      await page.fill(`${form} input[name="steps"]`, "6");
      await page.click(`${form} button[type="submit"]`);
      const submitted = await page.waitForSelector(`${form} output[data-submitted-job]`, { state: "attached" });
      const jobId = (await submitted.getAttribute("data-submitted-job")) ?? "";
      expect(jobId).not.toBe("");
      const row = `.pgpulse-nc__job[data-job-id="${jobId}"]`;

      // Partway: the row shows the worker's progress and its message.
      await page.waitForFunction((selector) => {
        const job = document.querySelector(selector);
        const value = job?.querySelector("progress")?.value ?? 0;
        return job?.getAttribute("data-state") === "running" && value > 0 && value < 1;
      }, row);
      const partway = await page.$eval(row, (job) => ({
        kind: job.querySelector(".pgpulse-nc__job-kind")?.textContent ?? null,
        state: job.querySelector(".pgpulse-nc__job-state")?.textContent ?? null,
        message: job.querySelector(".pgpulse-nc__job-message")?.textContent ?? null,
        attempt: job.getAttribute("data-attempt"),
      }));
      expect(partway.kind).toBe("sleep");
      expect(partway.attempt).toBe("1");
      expect(partway.state).toMatch(/^\d+%$/);
      expect(partway.message).toMatch(/^step [1-5] of 6$/);

      // The end: complete, full, and the only row for the job.
      await page.waitForSelector(`${row}[data-state="complete"]`, { state: "attached" });
      expect(await page.textContent(`${row} .pgpulse-nc__job-state`)).toBe("done");
      expect(await page.getAttribute(`${row} progress`, "value")).toBe("1");
      expect(await page.$$(".pgpulse-nc__job")).toHaveLength(1);
      expect(await getJob({ url: server.url, token, jobId })).toMatchObject({
        status: "succeeded",
        result: { slept: 3, steps: 6 },
      });

      // A reloaded page has no events of the job to replay: it reads the job from GET /api/jobs.
      const { page: reloaded } = await openDemo(context, token);
      await waitForStatus(reloaded, "open");
      await reloaded.waitForSelector(`${row}[data-state="complete"]`, { state: "attached" });
      expect(await reloaded.textContent(`${row} .pgpulse-nc__job-kind`)).toBe("sleep");
      expect(await reloaded.$$(".pgpulse-nc__job")).toHaveLength(1);
    } finally {
      await context.close();
      await worker.stop();
    }
  });

  it("shows a streamed answer as it is produced, then whole", async () => {
    const { browser, server } = running();
    const token = mintToken({ tenant_id: uniqueTenant("e2e-answer"), scope: "jobs" });
    const worker = await startWorker(server.dataDir);
    const context = await browser.newContext();
    try {
      const { page } = await openDemo(context, token);
      await waitForStatus(page, "open");
      await page.click('form[aria-label="Ask for a streamed answer"] button[type="submit"]');
      const answer = "[data-answer-job]";
      // Partway: some words, and more to come.
      await page.waitForSelector(`${answer}[data-status="running"]`, { state: "attached" });
      await page.waitForFunction((selector) => (document.querySelector(selector)?.textContent ?? "").length > 20, answer);
      await page.waitForSelector(`${answer}[data-status="succeeded"]`, { state: "attached" });
      const jobId = (await page.getAttribute(answer, "data-answer-job")) ?? "";
      const job = await getJob<{ text: string }>({ url: server.url, token, jobId });
      expect(job.kind).toBe("stream");
      expect(job.text.length).toBeGreaterThan(100);
      expect(job.result).toEqual({ text: job.text });
      expect(await page.textContent(answer)).toBe(job.text);
    } finally {
      await context.close();
      await worker.stop();
    }
  });

  it("tells a page on an origin the server does not allow what to set, while its socket is live", async () => {
    const { browser, server } = running();
    const token = mintToken({ tenant_id: uniqueTenant("e2e-origin") });
    // The same page from another port: another origin, absent from PGPULSE_ALLOWED_ORIGINS.
    const stranger = await serveFolder(demoDir ?? "");
    const context = await browser.newContext();
    try {
      const { page } = await openDemo(context, token, {}, stranger.origin);
      await page.waitForSelector('.pgpulse-nc[data-problem="origin-not-allowed"]', { state: "attached" });
      // What to set (the server may list the origins it allows already), and where.
      const explains = (text: string | null): void => {
        expect(text).toMatch(/^this origin is not allowed: set PGPULSE_ALLOWED_ORIGINS=\S+ on the server at /);
        expect(text).toContain(`PGPULSE_ALLOWED_ORIGINS=`);
        expect(text?.split(" ")[6]?.split("=")[1]?.split(",")).toContain(stranger.origin);
        expect(text).toContain(`on the server at ${server.url}`);
      };
      // The WebSocket (which CORS does not govern) is live; the status says that is not all.
      expect(await page.getAttribute(".pgpulse-nc", "data-status")).toBe("open");
      expect(await page.textContent(".pgpulse-nc__status")).toBe("Live, but the server refuses this page's HTTP calls");
      explains(await page.textContent(".pgpulse-nc__problem"));

      // The page's own form gets the same explanation, not a bare "Failed to fetch".
      await page.fill('form[aria-label="Send a notification"] input', "refused");
      await page.click('form[aria-label="Send a notification"] button[type="submit"]');
      const alert = await page.waitForSelector('form[aria-label="Send a notification"] [role="alert"]');
      explains(await alert.textContent());
      expect(await messages(page)).toEqual([]);
    } finally {
      await context.close();
      await stranger.close();
    }
  });

  it("diagnoses a refused origin even on a server that does not report it in /healthz", async () => {
    const { browser } = running();
    const token = mintToken({ tenant_id: uniqueTenant("e2e-silent") });
    // A plain web server on another origin: it answers, with no CORS headers and no report.
    const silent = await serveFolder(demoDir ?? "");
    const context = await browser.newContext();
    try {
      const { page } = await openDemo(context, token, { server: silent.origin, maxDelayMs: "1000" });
      await page.fill('form[aria-label="Send a notification"] input', "refused");
      await page.click('form[aria-label="Send a notification"] button[type="submit"]');
      const alert = await page.waitForSelector('form[aria-label="Send a notification"] [role="alert"]');
      expect(await alert.textContent()).toBe(
        `this origin is not allowed: set PGPULSE_ALLOWED_ORIGINS=${running().demo.origin} on the server at ${silent.origin} ` +
          "(the browser refused its answer to POST /api/notifications under CORS)",
      );
    } finally {
      await context.close();
      await silent.close();
    }
  });

  it("does not blame the origin when the server cannot be reached at all", async () => {
    const { browser } = running();
    const token = mintToken({ tenant_id: uniqueTenant("e2e-down") });
    const nobody = `http://127.0.0.1:${await freePort()}`;
    const context = await browser.newContext();
    try {
      const { page } = await openDemo(context, token, { server: nobody, maxDelayMs: "1000" });
      await page.fill('form[aria-label="Send a notification"] input', "nowhere");
      await page.click('form[aria-label="Send a notification"] button[type="submit"]');
      const alert = await page.waitForSelector('form[aria-label="Send a notification"] [role="alert"]');
      const text = (await alert.textContent()) ?? "";
      expect(text).not.toBe("");
      expect(text).not.toContain("PGPULSE_ALLOWED_ORIGINS");
      expect(await page.getAttribute(".pgpulse-nc", "data-status")).not.toBe("open");
      expect(await page.$(".pgpulse-nc__problem")).toBeNull();
    } finally {
      await context.close();
    }
  });
});
