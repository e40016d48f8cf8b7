// Refusals and failures: words from the problem document, a Retry-After countdown, a retry that
// reuses the Idempotency-Key (so it never doubles a turn), and an expired sign-in.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
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

/** A 503 in the server's words, once; the next request goes through. */
async function refuseOnce(page) {
  let refused = false;
  await page.route(isChat, async (route) => {
    if (refused) return route.continue();
    refused = true;
    await route.fulfill({
      status: 503,
      headers: { "Content-Type": "application/problem+json" },
      body: JSON.stringify({ type: "urn:serverless-chat:problem:unavailable", title: "Service unavailable", status: 503, detail: "No provider answered in time.", request_id: "t" }),
    });
  });
}

test("a message not sent is marked on its bubble, kept across conversations with the draft, and sent again or deleted", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  await signIn(page, user);
  await send(page, "kept");
  await lastFinishedReply(page);
  const { body } = await api(user, "GET", "/conversations");
  const id = body.conversations[0].id;

  await refuseOnce(page);
  await send(page, "not yet");
  const failed = page.locator("article.message.user.failed");
  await failed.getByText("Not sent: Service unavailable. No provider answered in time.").waitFor();
  assert.equal(await failed.getByRole("button", { name: "Send again" }).isVisible(), true);
  assert.equal(await failed.getByRole("button", { name: "Delete" }).isVisible(), true);
  assert.equal(await failed.getByRole("button", { name: "Edit" }).isVisible(), true);
  if (process.env.SCREENSHOTS_DIR) await page.screenshot({ path: join(process.env.SCREENSHOTS_DIR, "failed-light.png") });

  // A draft and the unsent message stay with their conversation.
  await page.getByRole("textbox", { name: "Message" }).fill("half written");
  await page.getByRole("button", { name: "New chat" }).click();
  assert.equal(await page.getByRole("textbox", { name: "Message" }).inputValue(), "");
  await page.locator(`#conversation-list [data-id="${id}"]`).click();
  await failed.getByText("Not sent:", { exact: false }).waitFor();
  assert.equal(await page.getByRole("textbox", { name: "Message" }).inputValue(), "half written");

  await failed.getByRole("button", { name: "Send again" }).click();
  await page.locator("article.message.assistant").nth(1).locator(".message-actions").waitFor();
  assert.equal(await page.locator("article.message.user.failed").count(), 0);
  const stored = (await api(user, "GET", `/conversations/${id}/messages?order=asc`)).body.messages;
  assert.deepEqual(stored.map((m) => m.content), ["kept", echoOf("kept"), "not yet", echoOf("not yet")]);

  // Another refusal, deleted: it leaves the page and nothing is stored.
  await page.unroute(isChat);
  await refuseOnce(page);
  await page.getByRole("textbox", { name: "Message" }).fill("never mind");
  await page.getByRole("textbox", { name: "Message" }).press("Enter");
  await failed.waitFor();
  await failed.getByRole("button", { name: "Delete" }).click();
  assert.equal(await page.locator("article.message.user").count(), 2);
  await page.getByRole("button", { name: "New chat" }).click();
  await page.locator(`#conversation-list [data-id="${id}"]`).click();
  await page.locator("article.message.assistant").nth(1).waitFor();
  assert.equal(await page.locator("article.message.user").count(), 2, "a deleted unsent message does not come back");
  await closePage(page);
});
