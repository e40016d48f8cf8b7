// Refusals and failures: words from the problem document, a Retry-After countdown, a retry that
// reuses the Idempotency-Key (so it never doubles a turn), and an expired sign-in.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { api, closePage, echoOf, freshUser, lastFinishedReply, launch, openPage, send, signIn } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const isChat = (url) => new URL(url).pathname === "/chat";

test("a 503 shows its words and a live Retry-After countdown; the retry sends the same key", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  await signIn(page, user);
  const keys = [];
  let refused = false;
  await page.route(isChat, async (route) => {
    keys.push(route.request().headers()["idempotency-key"]);
    if (refused) return route.continue();
    refused = true;
    await route.fulfill({
      status: 503,
      headers: { "Content-Type": "application/problem+json", "Retry-After": "3" },
      body: JSON.stringify({
        type: "urn:serverless-chat:problem:unavailable",
        title: "Service unavailable",
        status: 503,
        detail: "No provider answered in time.",
        request_id: "test",
      }),
    });
  });
  await send(page, "are you there");
  await page.getByRole("alert").getByText("Service unavailable. No provider answered in time.").waitFor();
  const retry = page.getByRole("button", { name: "Retry" });
  await page.getByText("Retry possible in 3 s.").waitFor();
  assert.equal(await retry.isDisabled(), true);
  await page.getByText("Retry possible in 2 s.").waitFor();
  await page.getByText("You can retry now.").waitFor();
  assert.equal(await retry.isEnabled(), true);
  await retry.click();
  const reply = await lastFinishedReply(page);
  assert.equal((await reply.locator(".message-body").textContent()).trim(), echoOf("are you there"));
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1]);
  assert.equal(await page.locator("article.message.user").count(), 1);
  await closePage(page);
});

test("a lost connection offers Retry, and the retry does not double the turn", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  await signIn(page, user);
  const keys = [];
  let lost = false;
  await page.route(isChat, async (route) => {
    keys.push(route.request().headers()["idempotency-key"]);
    if (lost) return route.continue();
    lost = true;
    // The server gets the request and runs the turn; the answer never reaches the page.
    const answer = await route.fetch();
    await answer.body();
    await route.abort("internetdisconnected");
  });
  await send(page, "did this arrive");
  await page.getByRole("alert").getByText("Could not reach the server").waitFor();
  await page.getByRole("button", { name: "Retry" }).click();
  const reply = await lastFinishedReply(page);
  assert.equal((await reply.locator(".message-body").textContent()).trim(), echoOf("did this arrive"));
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1]);
  const conversations = (await api(user, "GET", "/conversations")).body.conversations;
  assert.equal(conversations.length, 1);
  const messages = (await api(user, "GET", `/conversations/${conversations[0].id}/messages`)).body.messages;
  assert.deepEqual(messages.map((m) => m.role), ["user", "assistant"]);
  await closePage(page);
});

test("an expired sign-in (401) leads back to the sign-in form", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  await signIn(page, user);
  await page.route(isChat, (route) =>
    route.fulfill({
      status: 401,
      headers: { "Content-Type": "application/problem+json" },
      body: JSON.stringify({ type: "urn:serverless-chat:problem:unauthorized", title: "Unauthorized", status: 401, detail: "", request_id: "t" }),
    }),
  );
  await send(page, "hello");
  await page.getByText("Your sign-in has expired. Please sign in again.").waitFor();
  await page.getByLabel("User name").waitFor();
  assert.equal(await page.locator("#shell").isVisible(), false);
  await closePage(page);
});
