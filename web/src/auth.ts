// Who the caller is. Dev mode: a typed name, sent as X-Dev-User (kept in sessionStorage so a
// reload keeps it; it is not a secret). Cognito: the ID token, in this module's memory only.

import type { AppConfig, CognitoAuth } from "./config";
import { authorizeUrl, completeSignIn, logoutUrl, type Tokens } from "./pkce";

const DEV_USER_KEY = "chat.devUser";

let tokens: Tokens | null = null;

export function isValidDevUser(name: string): boolean {
  return /^[A-Za-z0-9._@-]{1,64}$/.test(name);
}

export class Session {
  constructor(private readonly config: AppConfig) {}

  get mode(): "dev" | "cognito" {
    return this.config.auth.mode;
  }

  private get cognito(): CognitoAuth {
    if (this.config.auth.mode !== "cognito") throw new Error("not in Cognito mode");
    return this.config.auth;
  }

  /** Finishes a sign-in redirect if the URL carries one; true when someone is signed in. */
  async restore(): Promise<boolean> {
    if (this.mode === "dev") return this.devUser() !== null;
    const url = new URL(location.href);
    const answer = await completeSignIn(this.cognito, url).finally(() => {
      if (url.searchParams.has("code") || url.searchParams.has("error")) {
        history.replaceState(null, "", url.pathname);
      }
    });
    if (answer) tokens = answer;
    return tokens !== null;
  }

  devUser(): string | null {
    const name = sessionStorage.getItem(DEV_USER_KEY);
    return name && isValidDevUser(name) ? name : null;
  }

  signInDev(name: string): void {
    sessionStorage.setItem(DEV_USER_KEY, name);
  }

  async startCognitoSignIn(): Promise<void> {
    location.assign(await authorizeUrl(this.cognito));
  }

  /** What to show as the signed-in user. */
  displayName(): string {
    if (this.mode === "dev") return this.devUser() ?? "";
    const claims = tokens ? decodeClaims(tokens.idToken) : {};
    const name = claims.email ?? claims["cognito:username"] ?? claims.sub;
    return typeof name === "string" ? name : "you";
  }

  identityHeaders(): Record<string, string> {
    if (this.mode === "dev") {
      const name = this.devUser();
      return name ? { "X-Dev-User": name } : {};
    }
    return tokens ? { Authorization: tokens.idToken } : {};
  }

  /** Forgets the caller here; nothing else. */
  forget(): void {
    tokens = null;
    sessionStorage.removeItem(DEV_USER_KEY);
  }

  /** Signs out: in Cognito mode this ends the managed-login session too (a redirect). */
  signOut(): void {
    this.forget();
    if (this.mode === "cognito") location.assign(logoutUrl(this.cognito));
  }
}

function decodeClaims(jwt: string): Record<string, unknown> {
  try {
    const payload = jwt.split(".")[1] ?? "";
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = Uint8Array.from(json, (ch) => ch.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  } catch {
    return {};
  }
}
