// Runtime settings: the deployment writes /config.json next to index.html; the local API server
// serves a dev one. No file (or a broken one) means dev mode against the same origin.

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

export function parseConfig(raw: unknown): AppConfig {
  if (typeof raw !== "object" || raw === null) return DEV_CONFIG;
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
  return { apiBaseUrl, auth: { mode: "dev" } };
}

export async function loadConfig(): Promise<AppConfig> {
  let response: Response;
  try {
    response = await fetch("/config.json", { cache: "no-store" });
  } catch {
    return DEV_CONFIG;
  }
  if (!response.ok) return DEV_CONFIG;
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    return DEV_CONFIG;
  }
  return parseConfig(body);
}
