// Typed client for the Task Management API.
//
// `schema.d.ts` is generated from the running service's /openapi.json (`make client`; CI fails
// when it is stale), and openapi-fetch checks every path, parameter, body and response against
// it. The one thing added here: each request gets `Authorization: Bearer <token>` from a token
// getter, e.g. Better Auth's `authClient.token()`.
import createClient, { type Client, type Middleware } from "openapi-fetch";

import type { components, paths } from "./schema";

export type { components, operations, paths } from "./schema";

export type Task = components["schemas"]["TaskRead"];
export type TaskCreate = components["schemas"]["TaskCreate"];
export type TaskUpdate = components["schemas"]["TaskUpdate"];
export type Priority = components["schemas"]["Priority"];
/** A deleted task in the change feed (`GET /api/v1/tasks/changes`). */
export type Tombstone = components["schemas"]["Tombstone"];
/** Every error response's body: `{ detail, code }` (the README lists the codes). */
export type ErrorBody = components["schemas"]["ErrorBody"];

/** The current JWT, or nothing (then the request goes without one and answers 401). */
export type TokenGetter = () =>
  | string
  | null
  | undefined
  | Promise<string | null | undefined>;

export interface TaskApiOptions {
  /** The API's origin, e.g. "https://api.example.com" (no trailing slash). */
  baseUrl: string;
  /** Called before every request; Better Auth: `async () => (await authClient.token()).data?.token`. */
  getToken: TokenGetter;
  /** A fetch to use instead of the global one (tests, server-side rendering). */
  fetch?: (request: Request) => Promise<Response>;
}

export type TaskApi = Client<paths>;

/** An openapi-fetch client for the API that sends the getter's token with every request. */
export function createTaskApi({ baseUrl, getToken, fetch }: TaskApiOptions): TaskApi {
  const client = createClient<paths>({ baseUrl, ...(fetch ? { fetch } : {}) });
  const bearer: Middleware = {
    async onRequest({ request }) {
      const token = await getToken();
      if (token) request.headers.set("Authorization", `Bearer ${token}`);
      return request;
    },
  };
  client.use(bearer);
  return client;
}

/**
 * The `cursor` of the next page of `GET /api/v1/tasks`, from the response's `Link` header
 * (`<...?limit=100&cursor=...>; rel="next"`), or null on the last page.
 */
export function nextCursor(response: Response): string | null {
  const link = response.headers.get("Link");
  if (!link) return null;
  for (const part of link.split(",")) {
    const target = /<([^>]*)>\s*;\s*rel="?next"?/.exec(part)?.[1];
    if (target !== undefined) {
      // The link is relative to the API; only its query matters here (nothing is fetched).
      return new URL(target, "http://api.invalid").searchParams.get("cursor");
    }
  }
  return null;
}
