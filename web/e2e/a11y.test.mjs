// Keyboard-only use, axe-core in light and dark at desktop and phone widths, and the screenshots.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { DESKTOP, PHONE, api, axeScan, closePage, freshUser, lastFinishedReply, launch, openPage, send, signIn, waitFor } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** Presses Tab (or Shift+Tab) until the focused element matches; fails after `max` presses. */
async function tabTo(page, describe, matches, { back = false, max = 60 } = {}) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? "Shift+Tab" : "Tab");
    if (await page.evaluate(matches)) return;
  }
  throw new Error(`Tab never reached ${describe}`);
}

const focusedButton = (name) => `(() => {
  const el = document.activeElement;
  return el instanceof HTMLButtonElement && el.textContent.trim() === ${JSON.stringify(name)};
})()`;

test("the main actions work from the keyboard alone", async () => {
  const page = await openPage(browser);
  const user = freshUser("keys");
  await page.goto("/");
  // The sign-in form takes focus once the app has started.
  await waitFor("focus on the user name", () => page.evaluate(() => document.activeElement?.id === "dev-user"));
  await page.keyboard.type(user);
  await page.keyboard.press("Enter");
  await page.getByText(`Signed in as ${user}`).waitFor();
  await waitFor("focus on the message box", () => page.evaluate(() => document.activeElement?.id === "composer-input"));

  await page.keyboard.type("keyboard only please");
  await page.keyboard.press("Enter");
  const reply = await lastFinishedReply(page);

  // Rate the reply: the Rate button, a radio group with arrows, a comment, submit.
  await tabTo(page, "Rate", focusedButton("Rate"), { back: true });
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("type")), "radio");
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("Tab");
  await page.keyboard.type("by keyboard");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await reply.getByText("Rated 3 of 5: “by keyboard”").waitFor();

  // Rename through the dialog.
  await tabTo(page, "Rename", focusedButton("Rename"), { back: true });
  await page.keyboard.press("Enter");
  await page.keyboard.type("Typed title");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Typed title" }).waitFor();

  // A new chat, a stopped reply, then back to the first conversation from the list.
  await tabTo(page, "New chat", focusedButton("New chat"), { back: true });
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "New chat" }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), "composer-input");
  await page.keyboard.type(Array.from({ length: 60 }, (_, i) => `w${i}`).join(" "));
  await page.keyboard.press("Enter");
  await page.locator("article.message.assistant").waitFor();
  await tabTo(page, "Stop", focusedButton("Stop"));
  await page.keyboard.press("Enter");
  await page.getByText("Stopped: the reply was cut short.").waitFor();

  await tabTo(page, "the first conversation", `document.activeElement?.textContent?.includes("Typed title")`, { back: true });
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Typed title" }).waitFor();
  await page.locator("#messages").getByText("echo: keyboard only please").waitFor();

  // Erase all: the dialog opens on Cancel, Escape closes it, nothing is erased.
  await tabTo(page, "Erase all data", focusedButton("Erase all data"), { back: true });
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Cancel");
  await page.keyboard.press("Escape");
  await page.getByRole("dialog").waitFor({ state: "hidden" });
  assert.equal((await api(user, "GET", "/conversations")).body.conversations.length, 2);

  await tabTo(page, "Sign out", focusedButton("Sign out"));
  await page.keyboard.press("Enter");
  await page.getByLabel("User name").waitFor();
  await closePage(page);
});

test("on a 360 px screen nothing overflows sideways and the list opens from a button", async () => {
  const page = await openPage(browser, { viewport: PHONE });
  const user = freshUser("phone");
  await signIn(page, user);
  await send(page, "a phone sized message with a long unbroken word: " + "x".repeat(120));
  await lastFinishedReply(page);
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
  const list = page.getByRole("navigation", { name: "Conversations" });
  assert.equal(await list.isVisible(), false);
  await page.getByRole("button", { name: "Chats" }).click();
  await list.waitFor();
  await list.locator("button.conversation").first().waitFor();
  await page.keyboard.press("Escape");
  await list.waitFor({ state: "hidden" });
  await closePage(page);
});

const MARKDOWN = [
  "Show me **Markdown** with a list and some code:",
  "",
  "- replies stream in *word by word*",
  "- code gets highlighted on demand",
  "",
  "```rust",
  "fn main() {",
  '    let name = "world";',
  '    println!("hello, {name}"); // a comment',
  "}",
  "```",
].join("\n");

const shotsDir = process.env.SCREENSHOTS_DIR;

for (const [size, viewport] of [["desktop", DESKTOP], ["phone", PHONE]]) {
  for (const scheme of ["light", "dark"]) {
    test(`axe finds nothing serious (${size}, ${scheme}); screenshot`, async () => {
      const page = await openPage(browser, { viewport, colorScheme: scheme });
      const highlighter = [];
      page.on("request", (r) => {
        if (/\/assets\/highlight-[^/]+\.js$/.test(new URL(r.url()).pathname)) highlighter.push(r.url());
      });
      const user = freshUser("axe");
      await page.goto("/");
      await page.getByLabel("User name").waitFor();
      await axeScan(page, `sign-in, ${size} ${scheme}`);
      await signIn(page, user);
      await send(page, "What can you do?");
      await lastFinishedReply(page);
      assert.equal(highlighter.length, 0, "no code yet, no highlighter");
      await send(page, MARKDOWN);
      await page.getByRole("button", { name: "Stop" }).waitFor();
      const reply = await lastFinishedReply(page);
      await reply.locator("code.hljs .hljs-keyword").first().waitFor();
      assert.equal(highlighter.length, 1, "the highlighter chunk is loaded once, on demand");
      await reply.getByRole("button", { name: "Rate", exact: true }).click();
      await reply.getByLabel("5").check();
      await reply.getByLabel("Comment (optional)").fill("Clear example");
      await reply.getByRole("button", { name: "Submit rating" }).click();
      await reply.getByText("Rated 5 of 5").waitFor();
      await page.locator("#log").evaluate((log) => {
        log.scrollTop = log.scrollHeight;
      });
      await page.locator(".code-block").last().waitFor();
      await axeScan(page, `conversation, ${size} ${scheme}`);
      if (shotsDir) {
        mkdirSync(shotsDir, { recursive: true });
        await page.screenshot({ path: join(shotsDir, `${size}-${scheme}.png`) });
      }
      await reply.getByRole("button", { name: "Change rating" }).click();
      await reply.getByRole("form", { name: "Rate this reply" }).waitFor();
      await axeScan(page, `rating form, ${size} ${scheme}`);
      await page.getByRole("button", { name: "Erase all data" }).click();
      await page.getByRole("dialog").waitFor();
      await axeScan(page, `erase dialog, ${size} ${scheme}`);
      await page.keyboard.press("Escape");
      await waitFor("the dialog to close", async () => !(await page.getByRole("dialog").isVisible()));
      await closePage(page);
    });
  }
}
