import { readFileSync } from "node:fs";
import { defineConfig } from "vitest/config";

// `vite` (dev) and `vite preview` forward API calls to a local API server (LOCAL_API, default
// :3000), so the page and the API share an origin as they do under `make dev`. The paths are the
// first segments of the server's routes, listed in api-prefixes.json (a Rust test checks that it
// covers every route).
const api = process.env.LOCAL_API ?? "http://127.0.0.1:3000";
const prefixes = JSON.parse(readFileSync(new URL("./api-prefixes.json", import.meta.url), "utf8")) as string[];
const proxy = Object.fromEntries(prefixes.map((path) => [path, { target: api }]));

export default defineConfig({
  build: {
    target: "es2022",
    outDir: "dist",
    emptyOutDir: true,
    // The module-preload polyfill would add code every browser we support does not need.
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  server: { proxy },
  preview: { proxy },
  test: { environment: "node", include: ["test/**/*.test.ts"] },
});
