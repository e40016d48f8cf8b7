// The deployed sign-in, against a stand-in for Cognito's managed login (routed inside the browser):
// authorization code + PKCE, the ID token sent as Authorization and kept in memory only, sign-out
// through /logout. The page's CSP is the local server's plus the sign-in domain in connect-src, as
// the deployment's must be (the token exchange is a fetch).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BASE_URL, closePage, launch, openPage, waitFor } from "./harness.mjs";

const AUTH = "https://auth.example.test";
const CLIENT_ID = "test-client";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

function fakeIdToken(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "none" })}.${part(claims)}.sig`;
}

test("Cognito mode: PKCE sign-in, the ID token on API calls, nothing in storage, sign-out", async () => {
  const page = await openPage(browser);
  const redirectUri = `${BASE_URL}/`;
  const idToken = fakeIdToken({ email: "ada@example.test", sub: "u-1" });
  let authorize = null;
  let exchange = null;
  const apiHeaders = [];

  await page.route((url) => url.origin === BASE_URL && url.pathname === "/", async (route) => {
    const response = await route.fetch();
    const headers = response.headers();
    headers["content-security-policy"] = headers["content-security-policy"].replace("connect-src 'self'", `connect-src 'self' ${AUTH}`);
    await route.fulfill({ response, headers });
  });
  await page.route(`${BASE_URL}/config.json`, (route) =>
    route.fulfill({
      json: { apiBaseUrl: "", auth: { mode: "cognito", domain: AUTH, clientId: CLIENT_ID, redirectUri, logoutUri: redirectUri } },
    }),
  );
  await page.route(`${AUTH}/**`, async (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === "/oauth2/authorize") {
      authorize = url.searchParams;
      const back = `${redirectUri}?code=the-code&state=${encodeURIComponent(url.searchParams.get("state"))}`;
      // A page that sends the browser back, as the managed login does after a sign-in.
      return route.fulfill({ contentType: "text/html", body: `<!doctype html><script>location.replace(${JSON.stringify(back)})</script>` });
    }
    if (url.pathname === "/oauth2/token") {
      exchange = new URLSearchParams(route.request().postData());
      return route.fulfill({ json: { id_token: idToken, access_token: "a", expires_in: 3600, token_type: "Bearer" }, headers: { "Access-Control-Allow-Origin": "*" } });
    }
    if (url.pathname === "/logout") return route.fulfill({ contentType: "text/html", body: "<!doctype html><title>signed out</title>" });
    return route.abort();
  });
  const answers = {
    "/conversations": { conversations: [], next_cursor: null },
    "/models": { default: { provider: "echo", model: "echo-1" }, providers: [{ name: "echo", models: ["echo-1"] }] },
    "/usage": {
      day: "2026-12-04",
      turns: { used: 0, limit: 200, remaining: 200 },
      tokens: { used: 0, limit: 200000, remaining: 200000 },
      minute: { used: 0, limit: 10, remaining: 10 },
      custom_budget: false,
      resets_in_seconds: 3600,
    },
  };
  for (const [path, json] of Object.entries(answers)) {
    await page.route((url) => url.origin === BASE_URL && url.pathname === path, (route) => {
      apiHeaders.push(route.request().headers());
      return route.fulfill({ json });
    });
  }

  await page.goto("/");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Signed in as ada@example.test").waitFor();

  assert.equal(authorize.get("response_type"), "code");
  assert.equal(authorize.get("client_id"), CLIENT_ID);
  assert.equal(authorize.get("redirect_uri"), redirectUri);
  assert.equal(authorize.get("code_challenge_method"), "S256");
  assert.equal(exchange.get("grant_type"), "authorization_code");
  assert.equal(exchange.get("code"), "the-code");
  assert.equal(createHash("sha256").update(exchange.get("code_verifier")).digest("base64url"), authorize.get("code_challenge"));

  // The page shows the user before its first API calls have necessarily been sent.
  await waitFor("the conversations, models and usage calls", () => apiHeaders.length >= 3);
  for (const headers of apiHeaders) {
    assert.equal(headers["authorization"], idToken);
    assert.equal(headers["x-dev-user"], undefined);
  }
  // The code left the address bar; neither storage holds a token or the verifier now.
  assert.equal(new URL(page.url()).search, "");
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  assert.equal(stored, "{}{}");

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL((url) => url.origin === AUTH && url.pathname === "/logout");
  const logout = new URL(page.url()).searchParams;
  assert.equal(logout.get("client_id"), CLIENT_ID);
  assert.equal(logout.get("logout_uri"), redirectUri);
  await closePage(page);
});
