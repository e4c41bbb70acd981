// Better Auth test server for the taskapi integration tests.
//
// Env:
//   PORT                 port to listen on (127.0.0.1); 0 = pick a free port (default 0)
//   JWT_ALG              EdDSA (default) | ES256 | ES512 | RS256 | PS256 | HS256
//                        HS256: the shared-secret setup the README documents: the plugin's
//                        jwt.sign hook signs with HS256_SECRET (there is no JWKS then)
//   HS256_SECRET         the shared secret for JWT_ALG=HS256 (>= 32 characters)
//   BETTER_AUTH_SECRET   required, >= 32 characters
//   JWKS_GRACE_PERIOD    seconds a rotated-out key stays published (default 3600)
//   JWT_EXPIRATION       JWT lifetime, Better Auth syntax (default "15m")
//   EXIT_ON_STDIN_EOF    "1" = shut down when stdin closes (the Python harness sets this)
//   TEST_PAGE            "1" = also serve the browser test page (page/) under /app/, its script
//                        bundled at start by esbuild with the typed client (clients/typescript)
//
// Prints "READY <port>" on stdout once listening; the base URL is http://127.0.0.1:<port>.
//
// With TEST_PAGE=1, from Better Auth's own origin (as a Next.js front end is):
//   GET  /app/               page/index.html: signs up and in, takes the JWT, calls the Task API
//   GET  /app/app.js         page/app.ts with better-auth/client and the typed client, bundled
//   GET  /app/app.css        page/app.css
//
// Test-only endpoints (never expose this server beyond loopback):
//   POST /test/rotate        expire every live signing key and mint a new one; the old keys stay
//                            in the JWKS for JWKS_GRACE_PERIOD. -> {"kid": new, "previous": [...]}
//   POST /test/retire        drop every expired key from the JWKS (end of grace period).
//                            -> {"removed": [...], "kids": [...]}
//   POST /test/jwks-status   body {"status": 503} makes GET /api/auth/jwks answer that status
//                            (simulated outage); {"status": null} restores it. -> {"status": ...}
//   GET  /test/keys          {"signing": kid or null, "kids": [all kids in the table]}
import { readFile } from "node:fs/promises";
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { createJwk, jwt } from "better-auth/plugins/jwt";
import { SignJWT } from "jose";

const KEY_PAIR_CONFIGS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  ES256: { alg: "ES256", crv: "P-256" },
  ES512: { alg: "ES512", crv: "P-521" },
  RS256: { alg: "RS256", modulusLength: 2048 },
  PS256: { alg: "PS256", modulusLength: 2048 },
};

function fail(message) {
  process.stderr.write(`betterauth test server: ${message}\n`);
  process.exit(2);
}

const alg = process.env.JWT_ALG || "EdDSA";
const sharedSecret = alg === "HS256" ? process.env.HS256_SECRET : undefined;
if (alg === "HS256" && (!sharedSecret || sharedSecret.length < 32)) fail("HS256_SECRET must be set (at least 32 characters)");
const keyPairConfig = alg === "HS256" ? KEY_PAIR_CONFIGS.EdDSA : KEY_PAIR_CONFIGS[alg];
if (!keyPairConfig) fail(`unsupported JWT_ALG ${JSON.stringify(alg)}; use one of ${Object.keys(KEY_PAIR_CONFIGS).join(", ")}`);
const secret = process.env.BETTER_AUTH_SECRET;
if (!secret || secret.length < 32) fail("BETTER_AUTH_SECRET must be set (at least 32 characters)");
const requestedPort = Number.parseInt(process.env.PORT ?? "0", 10);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) fail(`bad PORT ${process.env.PORT}`);
const gracePeriod = Number.parseInt(process.env.JWKS_GRACE_PERIOD ?? "3600", 10);
const expirationTime = process.env.JWT_EXPIRATION || "15m";

// The memory adapter's tables: we own this object, so the test endpoints can inspect it.
const db = { user: [], session: [], account: [], verification: [], jwks: [] };

const jwtOptions = sharedSecret
  ? {
      // Exactly what README.md tells a front end to configure for the shared-secret mode.
      jwks: { remoteUrl: "https://unused.invalid/jwks", keyPairConfig: { alg: "EdDSA" } },
      jwt: {
        expirationTime,
        sign: (payload) =>
          new SignJWT(payload).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(sharedSecret)),
      },
    }
  : {
      jwks: { keyPairConfig, gracePeriod },
      jwt: { expirationTime },
    };

let auth; // created once the port is known, since the base URL contains it
let authHandler;
let jwksStatusOverride = null;

function isLive(key, now = new Date()) {
  return !key.expiresAt || key.expiresAt > now;
}

function latestLiveKey() {
  return db.jwks.filter((k) => isLive(k)).sort((a, b) => b.createdAt - a.createdAt)[0];
}

async function rotate() {
  const now = new Date();
  const previous = [];
  for (const key of db.jwks) {
    if (isLive(key, now)) {
      key.expiresAt = new Date(now.getTime() - 1);
      previous.push(key.id);
    }
  }
  const ctx = await auth.$context;
  const created = await createJwk({ context: ctx }, jwtOptions);
  return { kid: created.id, previous };
}

function retire() {
  const now = new Date();
  const removed = db.jwks.filter((k) => !isLive(k, now)).map((k) => k.id);
  db.jwks = db.jwks.filter((k) => isLive(k, now));
  // The memory adapter reads `db[model]` on every call, so replacing the array is seen at once.
  return { removed, kids: db.jwks.map((k) => k.id) };
}

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString("utf8");
  return text ? JSON.parse(text) : {};
}

// The browser test page, built once at start (only with TEST_PAGE=1: esbuild is not needed
// otherwise). The bundle is ES2020 for the browser; nothing is written to disk.
async function buildTestPage() {
  const esbuild = await import("esbuild");
  const page = new URL("./page/", import.meta.url);
  const bundle = await esbuild.build({
    entryPoints: [new URL("app.ts", page).pathname],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2020",
    sourcemap: "inline",
    logLevel: "error",
  });
  return {
    "/app/": { type: "text/html; charset=utf-8", body: await readFile(new URL("index.html", page)) },
    "/app/app.css": { type: "text/css; charset=utf-8", body: await readFile(new URL("app.css", page)) },
    "/app/app.js": { type: "text/javascript; charset=utf-8", body: Buffer.from(bundle.outputFiles[0].contents) },
  };
}

const testPage = process.env.TEST_PAGE === "1" ? await buildTestPage().catch((err) => fail(`test page build failed: ${err?.stack ?? err}`)) : null;

function serveTestPage(req, res, path) {
  const file = testPage[path === "/app" ? "/app/" : path];
  if (!file || (req.method !== "GET" && req.method !== "HEAD")) return sendJson(res, 404, { error: "no such page file" });
  res.writeHead(200, { "content-type": file.type, "content-length": file.body.length, "cache-control": "no-store" });
  res.end(req.method === "HEAD" ? undefined : file.body);
}

async function handleTestRoute(req, res, path) {
  if (req.method === "POST" && path === "/test/rotate") return sendJson(res, 200, await rotate());
  if (req.method === "POST" && path === "/test/retire") return sendJson(res, 200, retire());
  if (req.method === "POST" && path === "/test/jwks-status") {
    const body = await readJson(req);
    const status = body.status ?? null;
    if (status !== null && !(Number.isInteger(status) && status >= 200 && status <= 599)) {
      return sendJson(res, 400, { error: "status must be an HTTP status code or null" });
    }
    jwksStatusOverride = status;
    return sendJson(res, 200, { status });
  }
  if (req.method === "GET" && path === "/test/keys") {
    return sendJson(res, 200, { signing: latestLiveKey()?.id ?? null, kids: db.jwks.map((k) => k.id) });
  }
  return sendJson(res, 404, { error: "unknown test route" });
}

const server = http.createServer((req, res) => {
  const path = (req.url ?? "/").split("?")[0];
  if (path.startsWith("/test/")) {
    handleTestRoute(req, res, path).catch((err) => {
      process.stderr.write(`test route ${path} failed: ${err?.stack ?? err}\n`);
      if (!res.headersSent) sendJson(res, 500, { error: String(err?.message ?? err) });
      else res.destroy();
    });
    return;
  }
  if (testPage && (path === "/app" || path.startsWith("/app/"))) return serveTestPage(req, res, path);
  if (jwksStatusOverride !== null && path === "/api/auth/jwks") {
    return sendJson(res, jwksStatusOverride, { error: "simulated JWKS outage" });
  }
  authHandler(req, res);
});

server.listen(requestedPort, "127.0.0.1", () => {
  const { port } = server.address();
  const baseURL = `http://127.0.0.1:${port}`;
  auth = betterAuth({
    baseURL,
    secret,
    database: memoryAdapter(db),
    emailAndPassword: { enabled: true },
    plugins: [jwt(jwtOptions)],
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
    trustedOrigins: [baseURL],
  });
  authHandler = toNodeHandler(auth);
  process.stdout.write(`READY ${port}\n`);
});

server.on("error", (err) => fail(`listen failed: ${err.message}`));

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
// With EXIT_ON_STDIN_EOF=1 the parent closing our stdin (e.g. pytest killed) also ends the server.
if (process.env.EXIT_ON_STDIN_EOF === "1") {
  process.stdin.on("end", shutdown);
  process.stdin.resume();
}
