// Narrows the deployed page's connect-src to this stack's own API and sign-in domain.
//
// CloudFront's headers policy cannot name the API (the API's CORS origin is the distribution, so
// the distribution cannot depend on the API): it allows any API Gateway host of the region. The
// page published to the stack carries a second policy in a <meta> tag, written from the stack's
// config.json, that allows only this API and this sign-in domain. A browser enforces both
// policies, so a request must pass each: the narrower one decides.
//
//   node web/scripts/csp.mjs CONFIG_JSON INDEX_HTML > narrowed.html

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The origins the page may connect to, from a config.json: the API's and the sign-in domain's. */
export function connectOrigins(config) {
  const origins = [new URL(config.apiBaseUrl).origin];
  if (config.auth?.mode === "cognito") origins.push(new URL(config.auth.domain).origin);
  for (const origin of origins) {
    if (!origin.startsWith("https://")) throw new Error(`not an https origin: ${origin}`);
  }
  return origins;
}

/** `html` with the narrowing policy as the first element of its <head>, before any script. */
export function narrowCsp(html, config) {
  const policy = ["connect-src 'self'", ...connectOrigins(config)].join(" ");
  const meta = `<meta http-equiv="Content-Security-Policy" content="${policy}" />`;
  const head = /<head[^>]*>/i.exec(html);
  if (!head) throw new Error("the page has no <head>");
  const at = head.index + head[0].length;
  return `${html.slice(0, at)}\n    ${meta}${html.slice(at)}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [configPath, htmlPath] = process.argv.slice(2);
  if (!configPath || !htmlPath) {
    console.error("usage: node web/scripts/csp.mjs CONFIG_JSON INDEX_HTML");
    process.exit(2);
  }
  const config = JSON.parse(readFileSync(configPath, "utf8"));
  process.stdout.write(narrowCsp(readFileSync(htmlPath, "utf8"), config));
}
