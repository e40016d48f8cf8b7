// The smaller things people expect: Enter on a phone's keyboard is a new line, the model chosen
// stays chosen after a reload, and a refusal is said in words, not as the server's status line.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { BASE_URL, closePage, composer, freshUser, lastFinishedReply, launch, openPage, PHONE, send, signIn, waitFor } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("on a touch screen Enter starts a new line and Send sends, as the hint says", async () => {
  const page = await openPage(browser, { viewport: PHONE, touch: true });
  await signIn(page, freshUser("touch"));
  assert.equal(await page.locator("#composer-hint").textContent(), "Enter starts a new line; Send sends.");
  await composer(page).click();
  await page.keyboard.type("line one");
  await page.keyboard.press("Enter");
  await page.keyboard.type("line two");
  assert.equal(await composer(page).inputValue(), "line one\nline two");
  assert.equal(await page.locator("article.message").count(), 0, "Enter sent nothing");
  await page.getByRole("button", { name: "Send", exact: true }).tap();
  await lastFinishedReply(page);
  assert.equal(await page.locator("article.message.user .message-body").textContent(), "line one\nline two");
  await closePage(page);
});

test("the model chosen stays chosen after a reload", async () => {
  const page = await openPage(browser);
  await page.route(`${BASE_URL}/models`, (route) =>
    route.fulfill({ json: { default: { provider: "echo", model: "echo-1" }, providers: [{ name: "echo", models: ["echo-1", "echo-2"] }] } }),
  );
  await signIn(page, freshUser("model"));
  const select = page.getByLabel("Model");
  await select.selectOption({ label: "echo-2" });
  await page.reload();
  await page.locator("#model option", { hasText: "echo-2" }).waitFor({ state: "attached" });
  assert.equal(JSON.parse(await select.inputValue()).model, "echo-2");
  await closePage(page);
});

test("a message to a conversation deleted elsewhere says so in words", async () => {
  const page = await openPage(browser);
  const user = freshUser("gone");
  await signIn(page, user);
  await composer(page).fill("first");
  await composer(page).press("Enter");
  await lastFinishedReply(page);
  const listed = await fetch(`${BASE_URL}/conversations`, { headers: { "X-Dev-User": user } }).then((r) => r.json());
  const id = listed.conversations[0].id;
  await fetch(`${BASE_URL}/conversations/${id}`, { method: "DELETE", headers: { "X-Dev-User": user } });
  await composer(page).fill("still there?");
  await composer(page).press("Enter");
  await page.getByRole("alert").getByText("This conversation no longer exists: it was deleted, perhaps in another tab.").waitFor();
  assert.equal(await page.getByText("Not Found. conversation not found").count(), 0);
  await closePage(page);
});

test("where only echo answers, the empty chat says what it is and how to reach a real model", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser("echo"));
  const hint = page.locator("#echo-hint");
  await hint.waitFor();
  assert.match(await hint.textContent(), /repeats what you\s+write/);
  assert.match(await hint.textContent(), /LLM_PROVIDERS=openai/);
  await closePage(page);
});

test("on a phone a tap beside the open list closes it", async () => {
  const page = await openPage(browser, { viewport: PHONE, touch: true });
  await signIn(page, freshUser("drawer"));
  const list = page.getByRole("navigation", { name: "Conversations" });
  await page.getByRole("button", { name: "Chats" }).tap();
  await list.waitFor();
  await page.touchscreen.tap(PHONE.width - 10, PHONE.height / 2);
  await list.waitFor({ state: "hidden" });
  assert.equal(await page.evaluate(() => document.activeElement?.id), "sidebar-toggle");
  await closePage(page);
});

test("after Stop the stopped reply's actions are in view", async () => {
  const page = await openPage(browser, { viewport: PHONE });
  await signIn(page, freshUser("stop"));
  await send(page, Array.from({ length: 200 }, (_, i) => `word${i}`).join(" "));
  const body = page.locator("article.message.assistant .message-body");
  await waitFor("more than a screen of the reply", async () => ((await body.textContent()) ?? "").split(" ").length >= 60);
  await page.getByRole("button", { name: "Stop" }).click();
  const actions = page.locator("article.message.assistant .message-actions");
  await actions.waitFor();
  // Once the composer below has settled: Send back, and the day's usage beside it.
  await page.getByRole("button", { name: "Send", exact: true }).waitFor();
  await page.locator("#composer-usage").waitFor();
  const inView = await actions.evaluate((element) => {
    const log = document.getElementById("log").getBoundingClientRect();
    const box = element.getBoundingClientRect();
    return { ok: box.top >= log.top - 1 && box.bottom <= log.bottom + 1, box: [box.top, box.bottom], log: [log.top, log.bottom], scroll: document.getElementById("log").scrollTop, height: document.getElementById("log").scrollHeight, doc: document.scrollingElement.scrollTop };
  });
  assert.ok(inView.ok, `the stopped reply's actions are within the visible log: ${JSON.stringify(inView)}`);
  await closePage(page);
});
