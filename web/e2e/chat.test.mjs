// Sending, streaming, stopping, and what a reply may never do.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  api,
  closePage,
  composer,
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

test("a reply streams in several pieces, then is listed and survives a reload", async () => {
  const page = await openPage(browser);
  const scripts = [];
  page.on("request", (r) => {
    if (r.resourceType() === "script") scripts.push(new URL(r.url()).pathname);
  });
  const user = freshUser();
  await signIn(page, user);
  // Every text the reply shows while it grows.
  await page.evaluate(() => {
    window.__seen = [];
    new MutationObserver(() => {
      const body = document.querySelector("article.message.assistant:last-of-type .message-body");
      const text = body?.textContent ?? "";
      if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
    }).observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
  });
  const message = "one two three four five six seven eight nine ten";
  const requestSeen = page.waitForRequest((r) => r.url().endsWith("/chat") && r.method() === "POST");
  await send(page, message);
  const request = await requestSeen;
  const reply = await lastFinishedReply(page);
  const expected = echoOf(message);
  assert.equal((await reply.locator(".message-body").textContent()).trim(), expected);

  const headers = request.headers();
  assert.match(headers["idempotency-key"] ?? "", /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(headers["accept"], "text/event-stream");
  assert.deepEqual(JSON.parse(request.postData()), { message, provider: "echo", model: "echo-1" });

  // The highlighter is fetched only for a reply with a code block; this one has none.
  assert.ok(scripts.length >= 1, "the app's script was requested");
  assert.deepEqual(scripts.filter((path) => /highlight/.test(path)), []);

  const seen = await page.evaluate(() => window.__seen);
  const partial = seen.filter((text) => text.trim() !== expected && expected.startsWith(text.trim()));
  assert.ok(partial.length >= 3, `expected several partial texts before the end, saw ${JSON.stringify(seen)}`);

  // The conversation is in the list, titled, and opens again after a reload.
  const stored = await api(user, "GET", "/conversations");
  assert.equal(stored.body.conversations.length, 1);
  const id = stored.body.conversations[0].id;
  await page.locator(`#conversation-list [data-id="${id}"]`).waitFor();
  await page.reload();
  await page.locator(`#conversation-list [data-id="${id}"]`).waitFor();
  await page.getByRole("button", { name: "New chat" }).click();
  assert.equal(await page.locator("article.message").count(), 0);
  await page.locator(`#conversation-list [data-id="${id}"]`).click();
  await page.locator("article.message.assistant").getByText(expected).waitFor();
  assert.equal(await page.locator("article.message.user .message-body").textContent(), message);
  assert.equal(await page.locator("article.message.user h3").textContent(), "You wrote");
  assert.equal(await page.locator(`#conversation-list [data-id="${id}"]`).getAttribute("aria-current"), "page");
  await closePage(page);
});

test("a message sent before the model list arrives carries the default model", async () => {
  const page = await openPage(browser);
  // The list answers late, as on a slow network; the message is sent before it arrives.
  await page.route(/\/models$/, async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 800));
    await route.continue();
  });
  const user = freshUser();
  await signIn(page, user);
  const requestSeen = page.waitForRequest((r) => r.url().endsWith("/chat") && r.method() === "POST");
  await send(page, "early");
  const request = await requestSeen;
  assert.deepEqual(JSON.parse(request.postData()), { message: "early", provider: "echo", model: "echo-1" });
  await lastFinishedReply(page);
  await closePage(page);
});

test("a message over the limit is kept whole, counted, and not sent until it fits", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser());
  const posts = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/chat") && r.method() === "POST") posts.push(r);
  });
  const long = "a".repeat(8_010);
  await composer(page).fill(long);
  const count = page.locator("#composer-count");
  await count.getByText(/8,010 of 8,000 characters: shorten it by 10 to send/).waitFor();
  await composer(page).press("Enter");
  assert.equal((await composer(page).inputValue()).length, 8_010, "nothing was cut");
  assert.equal(await page.locator("article.message.user").count(), 0);
  assert.equal(posts.length, 0);

  await composer(page).fill("b".repeat(8_000));
  await count.getByText(/^8,000 of 8,000 characters$/).waitFor();
  await composer(page).press("Enter");
  await lastFinishedReply(page);
  assert.equal(posts.length, 1);
  assert.equal(JSON.parse(posts[0].postData()).message.length, 8_000);
  assert.ok(await count.isHidden(), "the counter hides once the box is empty");
  await closePage(page);
});

/** A fresh user's page with a long reply a few words in. */
async function longReplyUnderWay() {
  const page = await openPage(browser);
  const user = freshUser();
  await signIn(page, user);
  const words = Array.from({ length: 80 }, (_, i) => `word${i}`).join(" ");
  await send(page, words);
  const body = page.locator("article.message.assistant .message-body");
  await waitFor("a few words of the reply", async () => ((await body.textContent()) ?? "").split(" ").length >= 4);
  return { page, user, words, body };
}

/** The server stores a partial reply when it notices the client left: waits for that. */
async function storedPartialReply(user) {
  const conversation = await waitFor("the conversation", async () => (await api(user, "GET", "/conversations")).body.conversations[0]);
  const reply = await waitFor("the stored partial reply", async () => {
    const { body: listed } = await api(user, "GET", `/conversations/${conversation.id}/messages`);
    return listed.messages.find((m) => m.role === "assistant");
  });
  return { conversation, reply };
}

test("Stop ends the reply early; it is kept, marked stopped, after a reload", async () => {
  const { page, user, words, body } = await longReplyUnderWay();
  await page.getByRole("button", { name: "Stop" }).click();
  const reply = page.locator("article.message.assistant");
  await reply.getByText("Stopped: the reply was cut short.").waitFor();
  const shown = (await body.textContent()).trim();
  assert.ok(shown.length < echoOf(words).length && echoOf(words).startsWith(shown), `not a strict prefix: ${shown}`);
  await page.getByRole("button", { name: "Send" }).waitFor();

  const { reply: storedReply } = await storedPartialReply(user);
  assert.equal(storedReply.ending, "stopped");
  assert.ok(storedReply.content.length < echoOf(words).length);

  await page.reload();
  const again = page.locator("article.message.assistant");
  await again.getByText("Cut short: stopped, or its page was closed or lost the connection.").waitFor();
  assert.ok(echoOf(words).startsWith((await again.locator(".message-body").textContent()).trim()));
  await closePage(page);
});

test("a reply cut by a reload is not labelled as stopped by the user", async () => {
  const { page, user, words, body } = await longReplyUnderWay();
  await page.reload(); // nobody pressed Stop
  const { conversation } = await storedPartialReply(user);
  await page.reload();
  await page.locator(`#conversation-list [data-id="${conversation.id}"]`).click();
  const reply = page.locator("article.message.assistant");
  await reply.locator(".ending").waitFor();
  assert.equal(await reply.locator(".ending").textContent(), "Cut short: stopped, or its page was closed or lost the connection.");
  assert.equal(await page.getByText("Stopped: the reply was cut short.").count(), 0);
  await closePage(page);
});

test("Enter sends; Shift+Enter starts a new line", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser());
  const box = composer(page);
  await box.click();
  await page.keyboard.type("first line");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("second line");
  assert.equal(await box.inputValue(), "first line\nsecond line");
  assert.equal(await page.locator("article.message").count(), 0);
  await page.keyboard.press("Enter");
  await page.locator("article.message.user").waitFor();
  assert.equal(await page.locator("article.message.user .message-body").textContent(), "first line\nsecond line");
  assert.equal(await box.inputValue(), "");
  await lastFinishedReply(page);
  await closePage(page);
});

const PAYLOADS = [
  '<img src=x onerror="window.__pwned=1">',
  "<script>window.__pwned=1</script>",
  "[click me](javascript:window.__pwned=1)",
  '<a href="javascript:window.__pwned=1">html link</a> <svg onload="window.__pwned=1"></svg>',
  '<iframe src="javascript:window.__pwned=1"></iframe> <b onmouseover="window.__pwned=1">bold</b>',
];

async function assertInert(page) {
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  const messages = page.locator("#messages");
  for (const selector of ["img", "script", "iframe", "svg", "[onerror]", "[onload]", "[onmouseover]", 'a[href^="javascript:" i]']) {
    assert.equal(await messages.locator(selector).count(), 0, `${selector} in the messages`);
  }
}

test("HTML and javascript: links in messages and replies show as text and never run", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser());
  for (const payload of PAYLOADS) {
    await send(page, payload);
    await page.getByRole("button", { name: "Send" }).waitFor();
    await lastFinishedReply(page);
  }
  const replies = page.locator("article.message.assistant .message-body");
  assert.equal(await replies.count(), PAYLOADS.length);
  assert.match(await replies.nth(0).textContent(), /<img src=x onerror="window.__pwned=1">/);
  assert.match(await replies.nth(1).textContent(), /<script>window.__pwned=1<\/script>/);
  assert.match(await page.locator("article.message.user").nth(0).textContent(), /<img src=x onerror/);
  // Whatever became of the Markdown link, following it runs nothing.
  const link = page.locator("article.message.assistant").getByText("click me", { exact: true });
  await link.click();
  assert.match(await replies.nth(4).textContent(), /<b onmouseover="window.__pwned=1">bold<\/b>/);
  await assertInert(page);
  // The same text read back from history goes through the same rendering.
  await page.reload();
  await page.locator("article.message.assistant").nth(PAYLOADS.length - 1).locator(".message-actions").waitFor();
  await assertInert(page);
  await closePage(page);
});

test("Copy puts the reply's text on the clipboard", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser());
  await send(page, "copy **this** please");
  const reply = await lastFinishedReply(page);
  await reply.getByRole("button", { name: "Copy", exact: true }).click();
  await reply.getByRole("button", { name: "Copied" }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), "echo: copy **this** please");
  await closePage(page);
});

test("a streaming reply renders its settled paragraphs once, not again every frame", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser());
  const words = Array.from({ length: 60 }, (_, i) => `word${i}`).join(" ");
  const message = `The first paragraph.\n\n${words}`;
  await send(page, message);
  const body = page.locator("article.message.assistant .message-body");
  // Once the second paragraph has begun, the first is settled: mark its node.
  await waitFor("the second paragraph under way", async () => ((await body.textContent()) ?? "").includes("word2"));
  const first = body.locator("p").first();
  assert.equal((await first.textContent()).trim(), "echo: The first paragraph.");
  await first.evaluate((node) => node.setAttribute("data-kept", "yes"));
  await waitFor("more of the reply", async () => ((await body.textContent()) ?? "").includes("word20"));
  assert.equal(await body.locator('p[data-kept="yes"]').count(), 1, "the settled paragraph was rendered anew");
  // The finished reply is rendered whole once more, as it reads.
  const reply = await lastFinishedReply(page);
  assert.deepEqual(
    await reply.locator(".message-body p").allTextContents(),
    ["echo: The first paragraph.", words],
  );
  await closePage(page);
});

test("a reply keeps its single line breaks and shows a task list's boxes", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser());
  await send(page, "Line one\nLine two\n\n- [x] done thing\n- [ ] open thing");
  const reply = await lastFinishedReply(page);
  const body = reply.locator(".message-body");
  assert.equal(await body.locator("p br").count(), 1, await body.innerHTML());
  assert.deepEqual(await body.locator("li").allTextContents(), ["☑ done thing", "☐ open thing"]);
  assert.deepEqual(
    await body.locator(".task").evaluateAll((marks) => marks.map((mark) => mark.getAttribute("aria-label"))),
    ["done", "not done"],
  );
  assert.equal(await body.locator("input").count(), 0, "no form controls in a reply");
  await closePage(page);
});

test("a slow reply shows a thinking placeholder from the moment of sending until it begins", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser());
  let release;
  const held = new Promise((resolve) => (release = resolve));
  await page.route("**/chat", async (route) => {
    await held;
    await route.continue();
  });
  await send(page, "take your time");
  const thinking = page.locator("#messages .thinking");
  await thinking.waitFor();
  assert.equal(await thinking.getByText("The assistant is thinking").count(), 1);
  // It sits right after the message it answers, and the message is not lost while it waits.
  assert.equal(await page.locator("#messages > :last-child").getAttribute("class"), "thinking");
  assert.equal(await page.locator("article.message.user .message-body").textContent(), "take your time");
  if (process.env.SCREENSHOTS_DIR) await page.screenshot({ path: join(process.env.SCREENSHOTS_DIR, "thinking-light.png") });
  release();
  const reply = await lastFinishedReply(page);
  assert.equal((await reply.locator(".message-body").textContent()).trim(), echoOf("take your time"));
  assert.equal(await thinking.count(), 0);
  await closePage(page);
});
