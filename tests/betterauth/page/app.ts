// The browser test page (tests/frontend/test_browser_e2e.py): the whole front-end path, as a
// Next.js page would run it. Served by server.mjs from Better Auth's origin (bundled by esbuild);
// the Task API is another origin, given as ?api=... with the account as ?email=&password=&name=.
//
// Better Auth's client signs up, signs out and signs in (session cookie), `authClient.token()`
// fetches the JWT from /api/auth/token, and the typed client (clients/typescript) sends it to
// the API: every call below is a cross-origin request with Authorization, so the browser
// preflights it, and every header read below is one the API must expose to this origin.
// The outcome is written into the page as JSON (#result) and body[data-done] = "ok" | "error".
import { createAuthClient } from "better-auth/client";
import { jwtClient } from "better-auth/client/plugins";

import { createTaskApi, nextCursor, type Task } from "../../../clients/typescript/src/index";

type Seen = Record<string, unknown>;
interface Step {
  name: string;
  ok: boolean;
  seen: Seen;
}

const query = new URLSearchParams(location.search);
const steps: Step[] = [];
const result: Record<string, unknown> = { pageOrigin: location.origin, steps };

function required(key: string): string {
  const value = query.get(key);
  if (!value) throw new Error(`missing ?${key}=`);
  return value;
}

function cell(row: HTMLTableRowElement, text: string, className = ""): void {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
}

function record(name: string, ok: boolean, seen: Seen): void {
  steps.push({ name, ok, seen });
  const row = (document.querySelector("#steps tbody") as HTMLTableSectionElement).insertRow();
  cell(row, ok ? "✓" : "✗", ok ? "ok" : "failed");
  cell(row, name);
  cell(row, JSON.stringify(seen), "seen");
  if (!ok) throw new Error(`${name}: ${JSON.stringify(seen)}`);
}

/** The headers a cross-origin script can read (what the API exposes to this origin). */
function exposed(response: Response, names: string[]): Record<string, string | null> {
  return Object.fromEntries(names.map((header) => [header, response.headers.get(header)]));
}

function showTasks(tasks: Task[]): void {
  const body = document.querySelector("#tasks tbody") as HTMLTableSectionElement;
  body.replaceChildren();
  for (const task of tasks) {
    const row = body.insertRow();
    cell(row, String(task.id));
    cell(row, task.title);
    cell(row, task.priority ?? "");
    cell(row, task.completed ? "yes" : "no");
  }
}

function claimsOf(jwt: string): Record<string, unknown> {
  const payload = jwt.split(".")[1] ?? "";
  return JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as Record<string, unknown>;
}

async function run(): Promise<void> {
  const apiUrl = required("api");
  const email = required("email");
  const password = required("password");
  const name = query.get("name") ?? "Browser User";
  result["apiOrigin"] = apiUrl;
  (document.getElementById("page-origin") as HTMLElement).textContent = location.origin;
  (document.getElementById("api-origin") as HTMLElement).textContent = apiUrl;

  // -- Better Auth, on this page's own origin --------------------------------------------------
  const authClient = createAuthClient({ baseURL: location.origin, plugins: [jwtClient()] });

  const signUp = await authClient.signUp.email({ email, password, name });
  record("sign up (POST /api/auth/sign-up/email)", !signUp.error && !!signUp.data, {
    user: signUp.data?.user.id ?? null,
    error: signUp.error?.message ?? null,
  });
  const userId = signUp.data?.user.id;

  const signOut = await authClient.signOut();
  record("sign out", !signOut.error, { error: signOut.error?.message ?? null });
  const signedOut = await authClient.token();
  record("no session, no JWT (GET /api/auth/token)", !!signedOut.error, {
    status: signedOut.error?.status ?? null,
  });

  const signIn = await authClient.signIn.email({ email, password });
  record("sign in (POST /api/auth/sign-in/email)", signIn.data?.user.id === userId, {
    user: signIn.data?.user.id ?? null,
  });

  const token = await authClient.token();
  const jwt = token.data?.token ?? "";
  const claims = jwt ? claimsOf(jwt) : {};
  const header = jwt ? (JSON.parse(atob(jwt.split(".")[0] ?? "")) as Record<string, unknown>) : {};
  record("JWT from GET /api/auth/token", claims["sub"] === userId, {
    alg: header["alg"] ?? null,
    sub: claims["sub"] ?? null,
    iss: claims["iss"] ?? null,
  });
  result["user"] = { id: userId, email };
  result["jwt"] = { alg: header["alg"], kid: header["kid"], iss: claims["iss"], aud: claims["aud"] };

  // -- the Task API, on another origin, through the typed client ------------------------------
  let tokenRequests = 0;
  const api = createTaskApi({
    baseUrl: apiUrl,
    getToken: async () => {
      tokenRequests += 1;
      return (await authClient.token()).data?.token;
    },
  });

  const created: Task[] = [];
  for (const [title, priority] of [
    ["Write the report", "high"],
    ["Review the pull request", "medium"],
    ["Plan the sprint", null],
  ] as const) {
    const { data, error, response } = await api.POST("/api/v1/tasks", {
      body: { title, priority, description: `created from ${location.origin}` },
    });
    const headers = exposed(response, ["Location", "RateLimit", "RateLimit-Policy", "X-Request-ID"]);
    record(`create "${title}" (POST)`, response.status === 201 && !!data, {
      status: response.status,
      ...headers,
      error: error ?? null,
    });
    if (data) created.push(data);
    result["create"] = { status: response.status, headers };
  }
  const [report, , plan] = created as [Task, Task, Task];
  result["created"] = created.map((task) => task.id);

  const first = await api.GET("/api/v1/tasks", { params: { query: { limit: 2 } } });
  const cursor = nextCursor(first.response);
  const firstHeaders = exposed(first.response, ["Link", "RateLimit"]);
  record("list, first page of 2 (GET)", first.data?.length === 2 && cursor !== null, {
    status: first.response.status,
    ids: first.data?.map((task) => task.id) ?? null,
    ...firstHeaders,
  });
  const second = await api.GET("/api/v1/tasks", { params: { query: { limit: 2, cursor } } });
  record("list, next page by the Link cursor (GET)", second.data?.length === 1, {
    status: second.response.status,
    ids: second.data?.map((task) => task.id) ?? null,
    Link: second.response.headers.get("Link"),
  });
  result["list"] = {
    firstPage: first.data?.map((task) => task.id),
    secondPage: second.data?.map((task) => task.id),
    headers: firstHeaders,
  };

  const read = await api.GET("/api/v1/tasks/{task_id}", {
    params: { path: { task_id: report.id } },
  });
  const readHeaders = exposed(read.response, ["ETag", "RateLimit"]);
  record("read one (GET)", read.data?.title === report.title, {
    status: read.response.status,
    title: read.data?.title ?? null,
    ...readHeaders,
  });
  result["read"] = { status: read.response.status, headers: readHeaders };

  // A conditional write when the API has ETags: a stale If-Match changes nothing (412), the
  // ETag just read lets it through. Without ETags, an unconditional PUT.
  const etag = readHeaders["ETag"];
  if (etag) {
    const stale = await api.PUT("/api/v1/tasks/{task_id}", {
      params: { path: { task_id: report.id }, header: { "if-match": '"0"' } },
      body: { completed: true },
    });
    record("stale If-Match: 412, nothing changed (PUT)", stale.error?.code === "PRECONDITION_FAILED", {
      status: stale.response.status,
      code: stale.error?.code ?? null,
    });
  }
  const updated = await api.PUT("/api/v1/tasks/{task_id}", {
    params: { path: { task_id: report.id }, ...(etag ? { header: { "if-match": etag } } : {}) },
    body: { completed: true, priority: "low" },
  });
  const newEtag = updated.response.headers.get("ETag");
  record(
    etag ? "update with the ETag as If-Match (PUT)" : "update (PUT)",
    updated.data?.completed === true && updated.data.priority === "low" && newEtag !== etag,
    {
      status: updated.response.status,
      completed: updated.data?.completed ?? null,
      priority: updated.data?.priority ?? null,
      ETag: newEtag,
    },
  );
  result["update"] = { status: updated.response.status, task: updated.data, etag: newEtag };

  const done = await api.GET("/api/v1/tasks", { params: { query: { completed: true } } });
  record("filter completed=true (GET)", done.data?.length === 1, {
    ids: done.data?.map((task) => task.id) ?? null,
  });

  const deleted = await api.DELETE("/api/v1/tasks/{task_id}", {
    params: { path: { task_id: plan.id } },
  });
  record("delete (DELETE)", deleted.response.status === 204, {
    status: deleted.response.status,
  });
  const gone = await api.GET("/api/v1/tasks/{task_id}", {
    params: { path: { task_id: plan.id } },
  });
  record("deleted task answers 404 with its code", gone.error?.code === "TASK_NOT_FOUND", {
    status: gone.response.status,
    code: gone.error?.code ?? null,
    detail: gone.error?.detail ?? null,
  });
  result["delete"] = { status: deleted.response.status, after: gone.response.status };

  const anonymous = createTaskApi({ baseUrl: apiUrl, getToken: () => null });
  const refused = await anonymous.GET("/api/v1/tasks");
  record("no token: 401 body readable across origins", refused.error?.code === "MISSING_TOKEN", {
    status: refused.response.status,
    code: refused.error?.code ?? null,
  });
  result["anonymous"] = { status: refused.response.status, code: refused.error?.code };

  const final = await api.GET("/api/v1/tasks");
  const tasks = final.data ?? [];
  showTasks(tasks);
  record("list what is left (GET)", tasks.length === 2, {
    titles: tasks.map((task) => task.title),
  });
  result["final"] = tasks;
  result["tokenRequests"] = tokenRequests;
}

run()
  .then(() => {
    result["ok"] = true;
  })
  .catch((error: unknown) => {
    result["ok"] = false;
    result["error"] = error instanceof Error ? `${error.message}\n${error.stack ?? ""}` : String(error);
  })
  .finally(() => {
    (document.getElementById("result") as HTMLElement).textContent = JSON.stringify(result, null, 2);
    document.body.dataset["done"] = result["ok"] ? "ok" : "error";
  });
