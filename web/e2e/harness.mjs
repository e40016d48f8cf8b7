// Shared by the browser tests: one Chromium per test file, a fresh context and a fresh random
// user per test, a small API client for arranging data, and waits on conditions (never on time).
import { randomUUID } from "node:crypto";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import AxeBuilder from "@axe-core/playwright";

export const BASE_URL = process.env.BASE_URL ?? "http://127.0.0.1:3000";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 360, height: 740 };

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export function freshUser(label = "web") {
  return `${label}-${randomUUID().slice(0, 12)}`;
}

/**
 * A page in its own context. It records what would show a broken page: script errors, and
 * Content-Security-Policy refusals (which the browser reports on the console).
 */
export async function openPage(browser, { viewport = DESKTOP, colorScheme = "light", touch = false } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, baseURL: BASE_URL, ...(touch ? { hasTouch: true, isMobile: true } : {}) });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE_URL });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy|Refused to/i.test(message.text())) {
      problems.push(`CSP: ${message.text()}`);
    }
  });
  page.problems = problems;
  return page;
}

export async function closePage(page) {
  const problems = [...page.problems];
  await page.context().close();
  assert.deepEqual(problems, [], "the page reported script errors or CSP refusals");
}

export async function signIn(page, user) {
  await page.goto("/");
  await page.getByLabel("User name").fill(user);
  await page.getByRole("button", { name: "Sign in" }).click();
  await composer(page).waitFor();
  assert.equal(await page.locator("#who").textContent(), user);
}

export function composer(page) {
  return page.getByRole("textbox", { name: "Message" });
}

export async function send(page, text) {
  await composer(page).fill(text);
  await composer(page).press("Enter");
}

/** The last assistant reply, once finished (its actions appear when `done` or a stop arrives). */
export async function lastFinishedReply(page) {
  const reply = page.locator("article.message.assistant").last();
  await reply.locator(".message-actions").waitFor();
  return reply;
}

export function echoOf(message) {
  return `echo: ${message}`;
}

/** Polls `probe` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitFor(what, probe, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Calls the API as `user` from the test itself, to arrange data or to check what was stored. */
export async function api(user, method, path, body) {
  const response = await fetch(BASE_URL + path, {
    method,
    headers: { "X-Dev-User": user, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

export async function chatTurn(user, message, conversationId) {
  const { status, body } = await api(user, "POST", "/chat", {
    message,
    ...(conversationId ? { conversation_id: conversationId } : {}),
  });
  assert.equal(status, 200, `POST /chat answered ${status}`);
  return body;
}

export async function axeScan(page, label) {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]).analyze();
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const summary = bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(summary, [], `axe found serious or critical violations (${label})`);
  return results;
}
