// The day's budget in words: what is left is shown beside the box, and a spent budget says when it
// renews, keeps the message in the box, and holds Send until then.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { closePage, composer, freshUser, lastFinishedReply, launch, openPage, send, signIn, waitFor } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("what is left of today's messages is shown, and a spent day says when more come", async () => {
  const page = await openPage(browser);
  await signIn(page, freshUser("quota"));
  await send(page, "one message");
  await lastFinishedReply(page);
  const usage = page.locator("#composer-usage");
  await waitFor("the usage line", async () => (await usage.textContent()) === "199 of 200 messages left today");
  assert.equal(await usage.getAttribute("class"), "hint composer-usage");

  // The server refuses the next turn as it does when the day's turns are spent.
  await page.route("**/chat", (route) =>
    route.fulfill({
      status: 429,
      contentType: "application/problem+json",
      headers: { "Retry-After": "3600", "RateLimit-Limit": "2", "RateLimit-Remaining": "0", "RateLimit-Reset": "3600" },
      body: JSON.stringify({
        type: "urn:serverless-chat:problem:quota-exceeded",
        title: "Too Many Requests",
        status: 429,
        detail: "today's 2 turns are used up; the budget renews at 00:00 UTC",
        request_id: "req-1",
      }),
    }),
  );
  await send(page, "over the limit");
  const banner = page.locator("#banner-text");
  await banner.waitFor();
  const said = await banner.textContent();
  assert.match(said, /^You have used today's 2 messages; more at .+ your time\.$/);
  assert.doesNotMatch(said, /Too many requests|turns are used up/);
  assert.equal(await page.locator("#banner-retry").isVisible(), false, "no Retry before the day renews");
  assert.equal(await page.locator("#banner-countdown").textContent(), "");
  // The message is back in the box, no bubble looks sent, and Send waits.
  assert.equal(await composer(page).inputValue(), "over the limit");
  assert.equal(await page.locator("article.message.user").count(), 1);
  assert.equal(await page.getByRole("button", { name: "Send", exact: true }).isDisabled(), true);
  assert.equal(await usage.textContent(), said);
  assert.match(await usage.getAttribute("class"), /\blow\b/);
  if (process.env.SCREENSHOTS_DIR) await page.screenshot({ path: join(process.env.SCREENSHOTS_DIR, "quota-light.png") });
  // Enter does not send either: a sent message leaves the box at once.
  await composer(page).press("Enter");
  assert.equal(await composer(page).inputValue(), "over the limit");
  assert.equal(await page.locator("article.message.user").count(), 1);
  await closePage(page);
});
