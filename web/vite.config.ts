import { defineConfig } from "vitest/config";

// `vite` (dev) and `vite preview` forward API calls to a local API server (LOCAL_API, default
// :3000), so the page and the API share an origin as they do under `make dev`.
const api = process.env.LOCAL_API ?? "http://127.0.0.1:3000";
const proxy = Object.fromEntries(
  ["/chat", "/conversations", "/history", "/feedback", "/models", "/health"].map((path) => [path, { target: api }]),
);

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
