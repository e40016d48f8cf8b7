import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain ES module of the publishing step, without types.
import { connectOrigins, narrowCsp } from "../scripts/csp.mjs";

const config = {
  apiBaseUrl: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
  auth: { mode: "cognito", domain: "https://chat-1a2b.auth.eu-west-1.amazoncognito.com", clientId: "x" },
};

describe("the published page's narrowing policy", () => {
  it("names this stack's API and sign-in origins only", () => {
    expect(connectOrigins(config)).toEqual([
      "https://abc123.execute-api.eu-west-1.amazonaws.com",
      "https://chat-1a2b.auth.eu-west-1.amazoncognito.com",
    ]);
    expect(() => connectOrigins({ apiBaseUrl: "http://plain.example/prod" })).toThrow(/https/);
  });

  it("comes first in the head, before any script", () => {
    const html = '<!doctype html><html><head>\n<script type="module" src="/a.js"></script></head></html>';
    const narrowed = narrowCsp(html, config);
    const meta = narrowed.indexOf('http-equiv="Content-Security-Policy"');
    expect(meta).toBeGreaterThan(narrowed.indexOf("<head>"));
    expect(meta).toBeLessThan(narrowed.indexOf("<script"));
    expect(narrowed).toContain(
      "content=\"connect-src 'self' https://abc123.execute-api.eu-west-1.amazonaws.com https://chat-1a2b.auth.eu-west-1.amazoncognito.com\"",
    );
    expect(() => narrowCsp("<html></html>", config)).toThrow(/head/);
  });
});
