// Ratings, renaming, deleting, erasing, and paging through long lists.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { api, chatTurn, closePage, freshUser, lastFinishedReply, launch, openPage, send, signIn, waitFor } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("Escape closes the rating form unsaved and returns to the Rate button", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  await signIn(page, user);
  await send(page, "rate me later");
  const reply = await lastFinishedReply(page);
  await reply.getByRole("button", { name: "Rate", exact: true }).click();
  const form = reply.getByRole("form", { name: "Rate this reply" });
  await form.getByLabel("Comment (optional)").fill("never sent");
  await page.keyboard.press("Escape");
  await waitFor("the form to close", async () => (await form.count()) === 0);
  assert.equal(await reply.getByRole("button", { name: "Rate", exact: true }).getAttribute("aria-expanded"), "false");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Rate");
  const conversation = (await api(user, "GET", "/conversations")).body.conversations[0];
  assert.deepEqual((await api(user, "GET", `/feedback?conversation_id=${conversation.id}`)).body.feedback, []);
  await closePage(page);
});

test("rating a reply stores it and shows it, also after a reload", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  await signIn(page, user);
  await send(page, "rate me");
  const reply = await lastFinishedReply(page);
  await reply.getByRole("button", { name: "Rate", exact: true }).click();
  const form = reply.getByRole("form", { name: "Rate this reply" });
  await form.getByLabel("4").check();
  await form.getByLabel("Comment (optional)").fill("clear and short");
  await form.getByRole("button", { name: "Submit rating" }).click();
  await reply.getByText("Rated 4 of 5: “clear and short”").waitFor();
  assert.equal(await form.count(), 0);

  const conversation = (await api(user, "GET", "/conversations")).body.conversations[0];
  const stored = (await api(user, "GET", `/feedback?conversation_id=${conversation.id}`)).body.feedback;
  assert.equal(stored.length, 1);
  assert.equal(stored[0].rating, 4);
  assert.equal(stored[0].comment, "clear and short");
  assert.equal(stored[0].message_id, await reply.getAttribute("data-message-id"));

  await page.reload();
  const again = await lastFinishedReply(page);
  await again.getByText("Rated 4 of 5: “clear and short”").waitFor();
  // Changing it replaces the rating.
  await again.getByRole("button", { name: "Change rating" }).click();
  await again.getByLabel("2").check();
  await again.getByRole("button", { name: "Submit rating" }).click();
  await again.getByText("Rated 2 of 5: “clear and short”").waitFor();
  const replaced = (await api(user, "GET", `/feedback?conversation_id=${conversation.id}`)).body.feedback;
  assert.deepEqual(replaced.map((f) => f.rating), [2]);
  await closePage(page);
});

test("renaming a conversation changes its title everywhere", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  const turn = await chatTurn(user, "a conversation to rename");
  await signIn(page, user);
  await page.locator(`#conversation-list [data-id="${turn.conversation_id}"]`).click();
  await page.getByRole("button", { name: "Rename", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: "Rename conversation" });
  await dialog.getByLabel("Title").fill("   ");
  await dialog.getByRole("button", { name: "Save" }).click();
  await dialog.getByText("The title cannot be empty.").waitFor();
  await dialog.getByLabel("Title").fill("Trip planning");
  await dialog.getByRole("button", { name: "Save" }).click();
  await dialog.waitFor({ state: "hidden" });
  await page.getByRole("heading", { name: "Trip planning" }).waitFor();
  await page.locator(`#conversation-list [data-id="${turn.conversation_id}"]`).getByText("Trip planning").waitFor();
  const listed = (await api(user, "GET", "/conversations")).body.conversations;
  assert.deepEqual(listed.map((c) => c.title), ["Trip planning"]);
  await page.reload();
  await page.locator(`#conversation-list [data-id="${turn.conversation_id}"]`).getByText("Trip planning").waitFor();
  await closePage(page);
});

test("deleting a conversation removes it and only it", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  const keep = await chatTurn(user, "keep this one");
  const gone = await chatTurn(user, "delete this one");
  await signIn(page, user);
  await page.locator(`#conversation-list [data-id="${gone.conversation_id}"]`).click();
  await page.locator("article.message.assistant").waitFor();
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: "Delete this conversation?" });
  await dialog.getByText("will be deleted with all its messages and ratings").waitFor();
  await dialog.getByRole("button", { name: "Cancel" }).click();
  assert.equal((await api(user, "GET", "/conversations")).body.conversations.length, 2);
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await dialog.getByRole("button", { name: "Delete conversation" }).click();
  await page.locator(`#conversation-list [data-id="${gone.conversation_id}"]`).waitFor({ state: "detached" });
  await page.getByRole("heading", { name: "New chat" }).waitFor();
  const listed = (await api(user, "GET", "/conversations")).body.conversations;
  assert.deepEqual(listed.map((c) => c.id), [keep.conversation_id]);
  assert.equal((await api(user, "GET", `/conversations/${gone.conversation_id}/messages`)).status, 404);
  await closePage(page);
});

test("erasing all data says what goes, asks first, then leaves nothing", async () => {
  const page = await openPage(browser);
  const user = freshUser();
  const turn = await chatTurn(user, "something to erase");
  assert.equal((await api(user, "POST", "/feedback", { conversation_id: turn.conversation_id, message_id: turn.message_id, rating: 5 })).status, 201);
  await signIn(page, user);
  await page.locator(`#conversation-list [data-id="${turn.conversation_id}"]`).waitFor();
  await page.getByRole("button", { name: "Erase all data" }).click();
  const dialog = page.getByRole("dialog", { name: "Erase all your data?" });
  for (const words of ["every conversation", "every message in them", "every rating and comment", "daily usage budget is not reset"]) {
    await dialog.getByText(words).waitFor();
  }
  await dialog.getByRole("button", { name: "Cancel" }).click();
  assert.equal((await api(user, "GET", "/conversations")).body.conversations.length, 1);

  await page.getByRole("button", { name: "Erase all data" }).click();
  await dialog.getByRole("button", { name: "Erase everything" }).click();
  await page.getByText("No conversations yet.").waitFor();
  assert.equal(await page.locator("#conversation-list li").count(), 0);
  assert.deepEqual((await api(user, "GET", "/conversations")).body.conversations, []);
  assert.deepEqual((await api(user, "GET", "/feedback")).body.feedback, []);
  await closePage(page);
});

test("long lists load more as they scroll: conversations down, messages up", async () => {
  const user = freshUser();
  const first = await chatTurn(user, "turn 0 of the long one");
  for (let i = 1; i < 17; i++) await chatTurn(user, `turn ${i} of the long one`, first.conversation_id);
  for (let i = 0; i < 22; i++) await chatTurn(user, `short conversation ${i}`);
  const page = await openPage(browser);
  await signIn(page, user);
  const items = page.locator("#conversation-list li");
  await waitFor("the first page of conversations", async () => (await items.count()) >= 20);
  // The oldest conversation (the long one) is on the second page.
  const oldest = page.locator(`#conversation-list [data-id="${first.conversation_id}"]`);
  await page.locator("#conversations-sentinel").scrollIntoViewIfNeeded();
  await oldest.waitFor();
  assert.equal(await items.count(), 23);

  await oldest.click();
  const messages = page.locator("article.message");
  await page.locator("#messages").getByText("echo: turn 16 of the long one").waitFor();
  assert.equal(await messages.count(), 30);
  // The newest message is at the bottom, in view.
  assert.equal(await messages.last().textContent().then((t) => t.includes("echo: turn 16 of the long one")), true);
  await page.locator("#log").evaluate((log) => {
    log.scrollTop = 0;
  });
  await page.locator("#messages").getByText("turn 0 of the long one", { exact: true }).waitFor();
  assert.equal(await messages.count(), 34);
  const texts = await page.locator("article.message .message-body").allTextContents();
  assert.equal(texts[0].trim(), "turn 0 of the long one");
  assert.equal(texts[33].trim(), "echo: turn 16 of the long one");
  await closePage(page);
});
