// Runtime settings: the deployment writes /config.json next to index.html; the local API server
// serves a dev one. No file (or a broken one) means dev mode only on this machine (a loopback
// host, as the Vite dev server); anywhere else the page fails closed: nobody may sign in.

export interface DevAuth {
  mode: "dev";
}

export interface CognitoAuth {
  mode: "cognito";
  domain: string;
  clientId: string;
  redirectUri: string;
  logoutUri: string;
}

export interface AppConfig {
  apiBaseUrl: string;
  auth: DevAuth | CognitoAuth;
}

export const DEV_CONFIG: AppConfig = { apiBaseUrl: "", auth: { mode: "dev" } };

/** The settings are missing or broken where a deployment must have them. */
export class ConfigError extends Error {}

/** Whether the page is served from this machine (where dev mode is the default). */
export function isLoopbackHost(hostname: string): boolean {
  return (
    hostname === "localhost" ||
    hostname.endsWith(".localhost") ||
    /^127(\.\d{1,3}){3}$/.test(hostname) ||
    hostname === "[::1]" ||
    hostname === "::1"
  );
}

const MISSING =
  "This site's settings (config.json) are missing or broken, so nobody can sign in here. " +
  "If you run this deployment, publish the web client again (make publish-web).";

/** The settings in `raw`; without usable ones, dev mode on a loopback host and a ConfigError elsewhere. */
export function parseConfig(raw: unknown, hostname = "localhost"): AppConfig {
  const fallback = (): AppConfig => {
    if (isLoopbackHost(hostname)) return DEV_CONFIG;
    throw new ConfigError(MISSING);
  };
  if (typeof raw !== "object" || raw === null) return fallback();
  const doc = raw as Record<string, unknown>;
  const apiBaseUrl = typeof doc.apiBaseUrl === "string" ? doc.apiBaseUrl.replace(/\/+$/, "") : "";
  const auth = doc.auth as Record<string, unknown> | undefined;
  if (auth && auth.mode === "cognito") {
    const fields = ["domain", "clientId", "redirectUri", "logoutUri"] as const;
    for (const field of fields) {
      if (typeof auth[field] !== "string" || auth[field] === "") {
        throw new Error(`config.json: auth.${field} is missing`);
      }
    }
    return {
      apiBaseUrl,
      auth: {
        mode: "cognito",
        domain: (auth.domain as string).replace(/\/+$/, ""),
        clientId: auth.clientId as string,
        redirectUri: auth.redirectUri as string,
        logoutUri: auth.logoutUri as string,
      },
    };
  }
  if (auth && auth.mode === "dev") return { apiBaseUrl, auth: { mode: "dev" } };
  return fallback();
}

export async function loadConfig(hostname = location.hostname): Promise<AppConfig> {
  let body: unknown = null;
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    if (response.ok) body = await response.json();
  } catch {
    // Unreachable or not JSON: as if there were none.
  }
  return parseConfig(body, hostname);
}
