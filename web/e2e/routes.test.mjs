// Each conversation has its own address: Back and Forward move between the ones opened, a typed
// address opens what it names (and a message goes there), a deep link to what does not exist says so.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { api, chatTurn, closePage, echoOf, freshUser, lastFinishedReply, launch, openPage, send, signIn, waitFor } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function shown(page, title) {
  await page.getByRole("heading", { name: title, level: 2 }).waitFor();
  await page.locator("#messages").getByText(echoOf(title)).waitFor();
}

test("Back and Forward move between conversations, and a typed address opens the one it names", async () => {
  const page = await openPage(browser);
  const user = freshUser("routes");
  const alpha = await chatTurn(user, "alpha");
  const beta = await chatTurn(user, "beta");
  await signIn(page, user);
  await page.locator(`#conversation-list [data-id="${alpha.conversation_id}"]`).click();
  await shown(page, "alpha");
  assert.equal(new URL(page.url()).hash, `#/c/${alpha.conversation_id}`);
  assert.equal(await page.title(), "alpha · Chat");
  await page.locator(`#conversation-list [data-id="${beta.conversation_id}"]`).click();
  await shown(page, "beta");

  await page.goBack();
  await shown(page, "alpha");
  await page.goForward();
  await shown(page, "beta");

  // A typed address: the conversation it names opens, and what is sent goes there.
  await page.evaluate((id) => (location.hash = `#/c/${id}`), alpha.conversation_id);
  await shown(page, "alpha");
  await send(page, "into alpha");
  await lastFinishedReply(page);
  await waitFor("the turn stored in alpha", async () => {
    const { body } = await api(user, "GET", `/conversations/${alpha.conversation_id}/messages?order=asc`);
    return body.messages.length === 4;
  });
  const { body } = await api(user, "GET", `/conversations/${beta.conversation_id}/messages?order=asc`);
  assert.equal(body.messages.length, 2, "nothing went to the conversation shown before");
  await closePage(page);
});

test("a deep link opens its conversation after sign-in, or says it does not exist", async () => {
  const page = await openPage(browser);
  const user = freshUser("routes");
  const gamma = await chatTurn(user, "gamma");
  await page.goto(`/#/c/${gamma.conversation_id}`);
  await page.getByLabel("User name").fill(user);
  await page.getByRole("button", { name: "Sign in" }).click();
  await shown(page, "gamma");

  await page.evaluate(() => (location.hash = "#/c/01ARZ3NDEKTSV4RRFFQ69G5FAV"));
  await page.getByText("This conversation no longer exists").waitFor();
  await page.getByRole("heading", { name: "New chat", level: 2 }).waitFor();
  await page.evaluate(() => (location.hash = "#/c/not-an-id"));
  await page.getByText("This conversation no longer exists").waitFor();
  await closePage(page);
});
