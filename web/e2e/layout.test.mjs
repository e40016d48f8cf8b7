// The page's frame: only the conversation scrolls; the top bar and header never leave the screen.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chatTurn, closePage, freshUser, launch, openPage, PHONE, signIn } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

for (const [label, viewport] of [
  ["desktop", undefined],
  ["phone", PHONE],
]) {
  test(`a long conversation scrolls inside the log, never the page (${label})`, async () => {
    const user = freshUser();
    let conversation = null;
    for (let i = 0; i < 20; i++) {
      conversation = (await chatTurn(user, `message ${i}\n\nwith a second paragraph`, conversation)).conversation_id;
    }
    const page = await openPage(browser, viewport ? { viewport } : {});
    await signIn(page, user);
    if (viewport) await page.locator("#sidebar-toggle").click(); // the list is a drawer on a phone
    await page.locator(`#conversation-list [data-id="${conversation}"]`).click();
    await page.locator("article.message.user", { hasText: "message 19" }).waitFor();

    // Read after scrolling the log to its end, and after trying to scroll the page itself.
    const frame = await page.evaluate(() => {
      const log = document.getElementById("log");
      log.scrollTop = log.scrollHeight;
      window.scrollTo(0, document.documentElement.scrollHeight);
      return {
        page: document.documentElement.scrollHeight,
        viewport: window.innerHeight,
        scrolled: window.scrollY,
        log: log.scrollHeight > log.clientHeight,
        top: document.querySelector(".chat-header").getBoundingClientRect().top,
      };
    });
    assert.ok(frame.log, "the conversation is longer than its log (the test needs it to be)");
    assert.ok(frame.page <= frame.viewport, `the page is ${frame.page} px tall in a ${frame.viewport} px window`);
    assert.equal(frame.scrolled, 0, "the page itself scrolled");
    assert.ok(frame.top >= 0, `the conversation's header left the screen (top ${frame.top})`);
    await closePage(page);
  });
}
