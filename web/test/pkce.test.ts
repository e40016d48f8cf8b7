import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { CognitoAuth } from "../src/config";
import { ConfigError, parseConfig } from "../src/config";
import { authorizeUrl, challengeFor, completeSignIn, logoutUrl, SignInError } from "../src/pkce";

class MemoryStorage {
  private items = new Map<string, string>();
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string) {
    this.items.set(key, value);
  }
  removeItem(key: string) {
    this.items.delete(key);
  }
}

const auth: CognitoAuth = {
  mode: "cognito",
  domain: "https://chat.auth.eu-west-1.amazoncognito.com",
  clientId: "client123",
  redirectUri: "https://app.example/",
  logoutUri: "https://app.example/",
};

describe("PKCE", () => {
  it("uses the RFC 7636 S256 challenge", async () => {
    // The example of RFC 7636, appendix B.
    expect(await challengeFor("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).toBe(
      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
  });

  it("signs in: authorize with a challenge and state, then exchange the code with the verifier", async () => {
    const storage = new MemoryStorage() as unknown as Storage;
    const url = new URL(await authorizeUrl(auth, storage));
    expect(url.origin + url.pathname).toBe(`${auth.domain}/oauth2/authorize`);
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(url.searchParams.get("response_type")).toBe("code");
    const state = url.searchParams.get("state")!;
    const challenge = url.searchParams.get("code_challenge")!;

    let sent: URLSearchParams | null = null;
    const fetcher = (async (input: RequestInfo | URL, init?: RequestInit) => {
      expect(String(input)).toBe(`${auth.domain}/oauth2/token`);
      sent = new URLSearchParams(String(init?.body));
      return new Response(JSON.stringify({ id_token: "id.jwt.token", expires_in: 3600 }), { status: 200 });
    }) as typeof fetch;
    const tokens = await completeSignIn(auth, new URL(`https://app.example/?code=abc&state=${state}`), storage, fetcher);
    expect(tokens?.idToken).toBe("id.jwt.token");
    const verifier = sent!.get("code_verifier")!;
    expect(createHash("sha256").update(verifier).digest("base64url")).toBe(challenge);
    expect(sent!.get("grant_type")).toBe("authorization_code");
    expect(sent!.get("code")).toBe("abc");
    // The verifier is gone after the round trip.
    expect(storage.getItem("chat.pkce")).toBeNull();
  });

  it("refuses an answer whose state does not match", async () => {
    const storage = new MemoryStorage() as unknown as Storage;
    await authorizeUrl(auth, storage);
    const fetcher = (async () => new Response("{}")) as typeof fetch;
    await expect(completeSignIn(auth, new URL("https://app.example/?code=abc&state=forged"), storage, fetcher)).rejects.toBeInstanceOf(
      SignInError,
    );
  });

  it("shows an error answer's words only when its state is this tab's", async () => {
    const storage = new MemoryStorage() as unknown as Storage;
    await authorizeUrl(auth, storage);
    const forged = new URL("https://app.example/?error=access_denied&error_description=Call+0800+now&state=forged");
    const refused = await completeSignIn(auth, forged, storage).catch((error: Error) => error);
    expect(refused).toBeInstanceOf(SignInError);
    expect((refused as Error).message).not.toMatch(/0800/);

    const state = new URL(await authorizeUrl(auth, storage)).searchParams.get("state")!;
    const genuine = new URL(`https://app.example/?error=access_denied&error_description=User+cancelled&state=${state}`);
    await expect(completeSignIn(auth, genuine, storage)).rejects.toThrow("User cancelled");
  });

  it("logs out through the managed login", () => {
    expect(logoutUrl(auth)).toBe(`${auth.domain}/logout?client_id=client123&logout_uri=https%3A%2F%2Fapp.example%2F`);
  });
});

describe("config", () => {
  it("falls back to dev mode on this machine only, and reads a Cognito config", () => {
    expect(parseConfig(null)).toEqual({ apiBaseUrl: "", auth: { mode: "dev" } });
    expect(parseConfig({ auth: { mode: "dev" } }, "chat.example.com").auth.mode).toBe("dev");
    for (const host of ["localhost", "127.0.0.1", "app.localhost", "[::1]"]) {
      expect(parseConfig(undefined, host).auth.mode).toBe("dev");
    }
    // Deployed, a missing, broken or mode-less config fails closed instead of offering "any name".
    for (const raw of [null, "not an object", {}, { auth: { mode: "other" } }, { apiBaseUrl: "https://x" }]) {
      expect(() => parseConfig(raw, "d111.cloudfront.net")).toThrow(ConfigError);
    }
    expect(() => parseConfig(null, "127.0.0.1.evil.example")).toThrow(/config.json/);
    expect(parseConfig({ apiBaseUrl: "https://x/v1/", auth: { ...auth } }).apiBaseUrl).toBe("https://x/v1");
    expect(() => parseConfig({ apiBaseUrl: "", auth: { mode: "cognito" } })).toThrow(/domain/);
  });
});
