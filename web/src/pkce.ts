// OAuth 2.0 authorization code flow with PKCE (RFC 7636) against Cognito's managed login.
// The verifier and state live in sessionStorage only for the redirect round trip; tokens are
// returned to the caller, who keeps them in memory.

import type { CognitoAuth } from "./config";

const PENDING_KEY = "chat.pkce";

function base64url(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function randomToken(byteCount = 32): string {
  const bytes = new Uint8Array(byteCount);
  crypto.getRandomValues(bytes);
  return base64url(bytes);
}

export async function challengeFor(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

export async function authorizeUrl(auth: CognitoAuth, storage: Storage = sessionStorage): Promise<string> {
  const verifier = randomToken(48);
  const state = randomToken(24);
  storage.setItem(PENDING_KEY, JSON.stringify({ verifier, state }));
  const params = new URLSearchParams({
    response_type: "code",
    client_id: auth.clientId,
    redirect_uri: auth.redirectUri,
    scope: "openid email",
    state,
    code_challenge_method: "S256",
    code_challenge: await challengeFor(verifier),
  });
  return `${auth.domain}/oauth2/authorize?${params}`;
}

export interface Tokens {
  idToken: string;
  expiresAt: number;
}

export class SignInError extends Error {}

/** Finishes a redirect back from the managed login; null when the URL carries no answer. */
export async function completeSignIn(
  auth: CognitoAuth,
  url: URL,
  storage: Storage = sessionStorage,
  fetcher: typeof fetch = fetch,
): Promise<Tokens | null> {
  const code = url.searchParams.get("code");
  const error = url.searchParams.get("error");
  if (!code && !error) return null;
  const pending = storage.getItem(PENDING_KEY);
  storage.removeItem(PENDING_KEY);
  if (!pending) throw new SignInError("The sign-in was not started from this tab; please sign in again.");
  const { verifier, state } = JSON.parse(pending) as { verifier: string; state: string };
  // The state first: an answer this tab did not ask for, error or not, shows none of its words
  // (a crafted link could otherwise put any text on our sign-in screen).
  if (url.searchParams.get("state") !== state) {
    throw new SignInError("The sign-in answer did not match this tab's request; please sign in again.");
  }
  if (error) {
    throw new SignInError(url.searchParams.get("error_description") || error);
  }
  let response: Response;
  try {
    response = await fetcher(`${auth.domain}/oauth2/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        client_id: auth.clientId,
        code: code as string,
        redirect_uri: auth.redirectUri,
        code_verifier: verifier,
      }),
    });
  } catch {
    throw new SignInError("Could not reach the sign-in service; please sign in again.");
  }
  if (!response.ok) throw new SignInError(`The sign-in service refused the code (${response.status}).`);
  const body = (await response.json()) as { id_token?: string; expires_in?: number };
  if (!body.id_token) throw new SignInError("The sign-in service sent no ID token.");
  return { idToken: body.id_token, expiresAt: Date.now() + (body.expires_in ?? 3600) * 1000 };
}

export function logoutUrl(auth: CognitoAuth): string {
  const params = new URLSearchParams({ client_id: auth.clientId, logout_uri: auth.logoutUri });
  return `${auth.domain}/logout?${params}`;
}
