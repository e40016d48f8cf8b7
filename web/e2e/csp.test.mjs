// The published page's own Content-Security-Policy (web/scripts/csp.mjs) narrows the headers
// policy: Chromium enforces both, so the page reaches only the API its config.json names.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { narrowCsp } from "../scripts/csp.mjs";
import { launch } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A loopback server that answers every request with `answer(request, response)`. */
async function serve(answer) {
  const server = http.createServer(answer);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

test("the published page reaches its own API only, though the headers policy allows more", async () => {
  const api = await serve((_, response) => {
    response.setHeader("access-control-allow-origin", "*");
    response.end("{}");
  });
  const config = {
    apiBaseUrl: "https://abc123.execute-api.us-east-1.amazonaws.com/prod",
    auth: { mode: "cognito", domain: "https://chat-1a2b.auth.us-east-1.amazoncognito.com" },
  };
  const page = narrowCsp(readFileSync("dist/index.html", "utf8"), config);
  const site = await serve((_, response) => {
    // What the headers policy allows: any host of the region; here, the loopback "API" too.
    response.setHeader("content-security-policy", `connect-src 'self' ${api.origin}`);
    response.setHeader("content-type", "text/html");
    response.end(page);
  });
  const tab = await browser.newPage();
  const violations = [];
  tab.on("console", (message) => {
    if (/Content Security Policy/.test(message.text())) violations.push(message.text());
  });
  await tab.goto(`${site.origin}/`);
  const reached = await tab.evaluate((url) => fetch(url).then(() => true, () => false), api.origin);
  assert.equal(reached, false, "a host the page's policy does not name was reached");
  assert.ok(violations.some((text) => text.includes("connect-src")), violations.join("\n"));
  await tab.close();
  api.server.close();
  site.server.close();
});
