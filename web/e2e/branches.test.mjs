// Edit, Regenerate and "‹ 2 / 3 ›": a conversation is a tree, and the page shows one branch of it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  api,
  axeScan,
  closePage,
  echoOf,
  freshUser,
  lastFinishedReply,
  launch,
  openPage,
  send,
  signIn,
  waitFor,
} from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const shotsDir = process.env.SCREENSHOTS_DIR;

/** The texts of the log, in order. */
async function logTexts(page) {
  return page.locator("#messages article.message .message-body").allTextContents().then((all) => all.map((t) => t.trim()));
}

/** Signs in and holds a two-turn conversation: "first", then "second". */
async function twoTurns(page) {
  const user = freshUser("tree");
  await signIn(page, user);
  await send(page, "first");
  await lastFinishedReply(page);
  await send(page, "second");
  await waitFor("the second reply", async () => (await logTexts(page)).length === 4 && (await page.locator("article.message.assistant .message-actions").count()) === 2);
  return user;
}

async function activeBranch(user) {
  const { body } = await api(user, "GET", "/conversations");
  const id = body.conversations[0].id;
  const messages = await api(user, "GET", `/conversations/${id}/messages?order=asc`);
  return { id, messages: messages.body.messages };
}

test("an edit sends the new text as a sibling; ‹ › switches between the versions, and a reload keeps the one chosen", async () => {
  const page = await openPage(browser);
  const user = await twoTurns(page);
  const second = page.locator("article.message.user").nth(1);
  await second.getByRole("button", { name: "Edit" }).click();
  const box = second.getByRole("textbox", { name: "Your message" });
  assert.equal(await box.inputValue(), "second");
  await axeScan(page, "a message being edited");
  await box.fill("second, edited");
  const posted = page.waitForRequest((r) => r.url().endsWith("/chat") && r.method() === "POST");
  await second.getByRole("button", { name: "Save & send" }).click();
  const body = JSON.parse((await posted).postData());
  assert.equal(body.message, "second, edited");
  assert.equal(body.parent_id, "000000000002", "under the first reply");

  // The branch now ends with the edit, and the edited message says it is version 2 of 2.
  await page.getByRole("group", { name: "Version 2 of 2" }).waitFor();
  assert.deepEqual(await logTexts(page), ["first", echoOf("first"), "second, edited", echoOf("second, edited")]);

  // Back to version 1: the old text and its own reply, nothing of the edit.
  await page.getByRole("button", { name: "Previous version" }).click();
  await page.getByRole("group", { name: "Version 1 of 2" }).waitFor();
  assert.deepEqual(await logTexts(page), ["first", echoOf("first"), "second", echoOf("second")]);
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("aria-label")), "Next version");

  // The server keeps the choice: a reload shows version 1.
  await page.reload();
  await page.getByRole("group", { name: "Version 1 of 2" }).waitFor();
  assert.deepEqual(await logTexts(page), ["first", echoOf("first"), "second", echoOf("second")]);

  // The composer answers from the branch on screen.
  const next = page.waitForRequest((r) => r.url().endsWith("/chat") && r.method() === "POST");
  await send(page, "third");
  assert.equal(JSON.parse((await next).postData()).parent_id, "000000000004");
  await waitFor("the third reply", async () => (await logTexts(page)).length === 6 && (await page.locator("article.message.assistant .message-actions").count()) === 3);
  const { messages } = await activeBranch(user);
  assert.deepEqual(messages.map((m) => m.content), ["first", echoOf("first"), "second", echoOf("second"), "third", echoOf("third")]);
  await closePage(page);
});

test("Escape or Cancel leaves an edit without sending", async () => {
  const page = await openPage(browser);
  const user = await twoTurns(page);
  const first = page.locator("article.message.user").first();
  await first.getByRole("button", { name: "Edit" }).click();
  await first.getByRole("textbox", { name: "Your message" }).fill("never sent");
  await page.keyboard.press("Escape");
  await waitFor("the form to close", async () => (await first.locator("form").count()) === 0);
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Edit");
  await first.getByRole("button", { name: "Edit" }).click();
  await first.getByRole("button", { name: "Cancel" }).click();
  assert.deepEqual(await logTexts(page), ["first", echoOf("first"), "second", echoOf("second")]);
  const { messages } = await activeBranch(user);
  assert.equal(messages.length, 4, "nothing was sent");
  await closePage(page);
});

test("a first message edited is a new first version; Regenerate answers again as a sibling", async () => {
  const page = await openPage(browser);
  const user = await twoTurns(page);
  const first = page.locator("article.message.user").first();
  await first.getByRole("button", { name: "Edit" }).click();
  await first.getByRole("textbox", { name: "Your message" }).fill("a new start");
  await first.getByRole("button", { name: "Save & send" }).click();
  await page.getByRole("group", { name: "Version 2 of 2" }).waitFor();
  assert.deepEqual(await logTexts(page), ["a new start", echoOf("a new start")]);

  const posted = page.waitForRequest((r) => r.url().endsWith("/chat") && r.method() === "POST");
  await page.locator("article.message.assistant").last().getByRole("button", { name: "Regenerate" }).click();
  const body = JSON.parse((await posted).postData());
  assert.equal(typeof body.regenerate, "string");
  assert.equal(body.message, undefined);
  const reply = page.locator("article.message.assistant").last();
  await reply.getByRole("group", { name: "Version 2 of 2" }).waitFor();
  assert.deepEqual(await logTexts(page), ["a new start", echoOf("a new start")]);
  const { messages } = await activeBranch(user);
  assert.equal(messages.length, 2);
  assert.deepEqual(messages[1].siblings.ids.length, 2);
  assert.equal(messages[0].parent_id, null);
  await closePage(page);
});

test("a stopped reply can be regenerated; the stopped one stays as version 1", async () => {
  const page = await openPage(browser);
  const user = freshUser("tree");
  await signIn(page, user);
  const words = Array.from({ length: 80 }, (_, i) => `w${i}`).join(" ");
  await send(page, words);
  await page.locator("article.message.assistant .message-body").getByText("w3", { exact: false }).waitFor();
  await page.getByRole("button", { name: "Stop" }).click();
  await page.getByText("Stopped: the reply was cut short.").waitFor();
  await page.locator("article.message.assistant").getByRole("button", { name: "Regenerate" }).click();
  const reply = page.locator("article.message.assistant").last();
  await reply.getByRole("group", { name: "Version 2 of 2" }).waitFor();
  assert.equal((await reply.locator(".message-body").textContent()).trim(), echoOf(words));
  assert.equal(await reply.locator(".ending").count(), 0);
  await reply.getByRole("button", { name: "Previous version" }).click();
  await page.getByRole("group", { name: "Version 1 of 2" }).waitFor();
  await page.getByText("Cut short: stopped, or its page was closed or lost the connection.").waitFor();
  await closePage(page);
});

for (const scheme of ["light", "dark"]) {
  test(`a message with alternatives passes axe (${scheme}); screenshot`, async () => {
    const page = await openPage(browser, { colorScheme: scheme });
    await twoTurns(page);
    const reply = page.locator("article.message.assistant").last();
    await reply.getByRole("button", { name: "Regenerate" }).click();
    await page.getByRole("group", { name: "Version 2 of 2" }).waitFor();
    const second = page.locator("article.message.user").nth(1);
    await second.getByRole("button", { name: "Edit" }).click();
    await second.getByRole("textbox", { name: "Your message" }).fill("second, asked another way");
    await second.getByRole("button", { name: "Save & send" }).click();
    await page.locator("article.message.user").nth(1).getByRole("group", { name: "Version 2 of 2" }).waitFor();
    await axeScan(page, `versions, ${scheme}`);
    if (shotsDir) await page.screenshot({ path: join(shotsDir, `versions-${scheme}.png`) });
    await closePage(page);
  });
}
