/**
 * The FastAPI example in a real Chromium: pgpulse inside the app's own
 * server, the app's own login (a session cookie, no token anywhere), the
 * page served by the app. Two tenants, acme (alice, bob) and globex (carol,
 * dave): a user sees live what a teammate sends and nothing of the other
 * tenant, and watches a job's progress to its end.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import type { Browser, BrowserContext, Page } from "playwright-core";
import { build } from "vite";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { openTempDir, removeDataDir } from "../test/support/server.js";
import { startExample, type RunningExample } from "./support/example.js";
import { launchChromium } from "./support/browser.js";

const UI_TIMEOUT_MS = 20_000;
const EXAMPLE_CONFIG = fileURLToPath(new URL("../vite.example.config.ts", import.meta.url));
const PASSWORD = "pulse"; // every seeded user's

let pageDir: string | undefined;
let dataDir: string | undefined;
let example: RunningExample | undefined;
let browser: Browser | undefined;
const contexts: BrowserContext[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  // Built into a folder of its own, as the demo's test does, so runs side by side do not collide.
  pageDir = await mkdtemp(join(tmpdir(), "pgpulse-example-page-"));
  await build({ configFile: EXAMPLE_CONFIG, logLevel: "warn", build: { outDir: pageDir, emptyOutDir: true } });
  dataDir = await openTempDir("pgpulse-example-");
  example = await startExample({ dataDir, pageDir });
  browser = await launchChromium();
});

afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  expect(pageErrors.splice(0)).toEqual([]);
});

afterAll(async () => {
  await browser?.close();
  await example?.stop();
  if (dataDir !== undefined) await removeDataDir(dataDir);
  if (pageDir !== undefined) await rm(pageDir, { recursive: true, force: true });
});

function running(): { example: RunningExample; browser: Browser } {
  if (example === undefined || browser === undefined) throw new Error("setup did not finish");
  return { example, browser };
}

/** A fresh browser (its own cookies) on the example's page. */
async function openPage(): Promise<Page> {
  const { example, browser } = running();
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  page.on("pageerror", (error) => pageErrors.push(error.message));
  await page.goto(`${example.url}/`);
  return page;
}

/** Signs in through the page's form and waits until its notification center is live. */
async function signedIn(username: string): Promise<Page> {
  const page = await openPage();
  await page.fill('form[aria-label="Sign in"] input[name="username"]', username);
  await page.fill('form[aria-label="Sign in"] input[name="password"]', PASSWORD);
  await page.click('form[aria-label="Sign in"] button[type="submit"]');
  await page.waitForSelector(`[data-user="${username}"]`);
  await page.waitForSelector('.pgpulse-nc[data-status="open"]', { state: "attached" });
  return page;
}

async function send(page: Page, text: string): Promise<void> {
  const form = 'form[aria-label="Send a message"]';
  await page.fill(`${form} input[name="text"]`, text);
  await page.click(`${form} button[type="submit"]`);
  // The form empties once the app has answered 201 (stored and published).
  await page.waitForFunction((selector) => document.querySelector<HTMLInputElement>(selector)?.value === "", `${form} input[name="text"]`);
}

/** The notification center's messages, newest first. */
function messages(page: Page): Promise<string[]> {
  return page.$$eval("[data-notification-id] .pgpulse-nc__message", (nodes) => nodes.map((node) => node.textContent ?? ""));
}

async function waitForMessage(page: Page, message: string): Promise<string[]> {
  await page.waitForFunction(
    (expected) =>
      [...document.querySelectorAll("[data-notification-id] .pgpulse-nc__message")].some((node) => node.textContent === expected),
    message,
  );
  return messages(page);
}

describe("the FastAPI example in Chromium", () => {
  it("shows a teammate's message live, and nothing of another tenant", async () => {
    const run = Date.now().toString(36); // the database may be shared with earlier runs
    const alice = await signedIn("alice");
    const bob = await signedIn("bob");
    const carol = await signedIn("carol");
    expect(await alice.textContent("[data-tenant]")).toBe("acme");
    expect(await carol.textContent("[data-tenant]")).toBe("globex");

    await send(bob, `hello team ${run}`);
    await waitForMessage(alice, `Bob: hello team ${run}`);
    await waitForMessage(bob, `Bob: hello team ${run}`);

    // Another tenant's message reaches its own users only. Alice's stream is
    // in commit order, so once she has Bob's later message, Carol's would have
    // come before it had it been sent to her.
    await send(carol, `globex only ${run}`);
    await waitForMessage(carol, `Carol: globex only ${run}`);
    await send(bob, `after carol ${run}`);
    const seenByAlice = await waitForMessage(alice, `Bob: after carol ${run}`);
    expect(seenByAlice.filter((text) => text.endsWith(run))).toEqual([`Bob: after carol ${run}`, `Bob: hello team ${run}`]);
    expect(seenByAlice.some((text) => text.startsWith("Carol:"))).toBe(false);
    expect((await messages(carol)).some((text) => text.startsWith("Bob:"))).toBe(false);
    expect(await alice.getAttribute(".pgpulse-nc__bell", "aria-label")).toMatch(/^Notifications, [1-9]\d* unread$/);

    // A new page of Alice's reads the same messages back from the app's own history.
    const again = await openPage();
    await again.context().addCookies(await alice.context().cookies());
    await again.reload();
    await again.waitForSelector('.pgpulse-nc[data-status="open"]', { state: "attached" });
    const history = await waitForMessage(again, `Bob: after carol ${run}`);
    expect(history.filter((text) => text.endsWith(run))).toEqual([`Bob: after carol ${run}`, `Bob: hello team ${run}`]);
  });

  it("shows a job's progress and completion to the user who ran it", async () => {
    const alice = await signedIn("alice");
    const bob = await signedIn("bob");

    const form = 'form[aria-label="Run a job"]';
    await alice.fill(`${form} input[name="seconds"]`, "3");
    await alice.fill(`${form} input[name="steps"]`, "6");
    await alice.click(`${form} button[type="submit"]`);
    const submitted = await alice.waitForSelector(`${form} output[data-submitted-job]`, { state: "attached" });
    const jobId = (await submitted.getAttribute("data-submitted-job")) ?? "";
    expect(jobId).not.toBe("");
    const row = `.pgpulse-nc__job[data-job-id="${jobId}"]`;

    // Partway: the worker inside the app has reported some of its six steps.
    await alice.waitForFunction((selector) => {
      const job = document.querySelector(selector);
      const value = job?.querySelector("progress")?.value ?? 0;
      return job?.getAttribute("data-state") === "running" && value > 0 && value < 1;
    }, row);
    expect(await alice.textContent(`${row} .pgpulse-nc__job-kind`)).toBe("sleep");
    expect(await alice.textContent(`${row} .pgpulse-nc__job-message`)).toMatch(/^step [1-5] of 6$/);

    // The end.
    await alice.waitForSelector(`${row}[data-state="complete"]`, { state: "attached" });
    expect(await alice.textContent(`${row} .pgpulse-nc__job-state`)).toBe("done");
    expect(await alice.getAttribute(`${row} progress`, "value")).toBe("1");

    // The job was Alice's: her teammate's stream, which has carried on past its end, has none of it.
    const marker = `after the job ${Date.now().toString(36)}`;
    await send(alice, marker);
    await waitForMessage(bob, `Alice: ${marker}`);
    expect(await bob.$$(".pgpulse-nc__job")).toHaveLength(0);
  });

  it("asks a signed-out visitor to sign in, and pgpulse refuses its socket", async () => {
    const page = await openPage();
    await page.waitForSelector('form[aria-label="Sign in"]');
    await page.fill('form[aria-label="Sign in"] input[name="username"]', "alice");
    await page.fill('form[aria-label="Sign in"] input[name="password"]', "not the password");
    await page.click('form[aria-label="Sign in"] button[type="submit"]');
    expect(await (await page.waitForSelector('form[aria-label="Sign in"] [role="alert"]')).textContent()).toBe(
      "wrong username or password",
    );

    // Without the session cookie, the socket ends before any frame.
    const outcome = await page.evaluate(
      (url) =>
        new Promise<string>((resolve) => {
          const socket = new WebSocket(url);
          socket.onmessage = (message) => resolve(`frame: ${String(message.data)}`);
          socket.onclose = () => resolve("closed");
        }),
      `${running().example.url.replace("http", "ws")}/realtime/ws`,
    );
    expect(outcome).toBe("closed");
  });
});
