// Type tests, checked by `tsc --noEmit` (tests/frontend/test_typescript_client.py): what the
// generated types accept, and what they refuse. Nothing here runs.
import { createTaskApi, nextCursor, type ErrorBody, type Task } from "../src/index";

const api = createTaskApi({
  baseUrl: "http://127.0.0.1:8000",
  getToken: async () => "a JWT from /api/auth/token",
});

export async function everyOperation(): Promise<Task[]> {
  const created = await api.POST("/api/v1/tasks", {
    body: { title: "Write the docs", priority: "high", due_date: "2030-01-01T00:00:00Z" },
  });
  if (created.error) {
    const body: ErrorBody = created.error;
    throw new Error(`${created.response.status} ${body.code}: ${body.detail}`);
  }
  const task: Task = created.data;
  const location: string | null = created.response.headers.get("Location");

  const read = await api.GET("/api/v1/tasks/{task_id}", {
    params: { path: { task_id: task.id } },
  });
  const title: string | undefined = read.data?.title;

  const updated = await api.PUT("/api/v1/tasks/{task_id}", {
    params: { path: { task_id: task.id } },
    body: { completed: true, description: null },
  });
  const completed: boolean | undefined = updated.data?.completed;

  // A conditional write: the ETag last seen as If-Match (412 PRECONDITION_FAILED if stale).
  const etag = updated.response.headers.get("ETag") ?? "*";
  const patched = await api.PATCH("/api/v1/tasks/{task_id}", {
    params: { path: { task_id: task.id }, header: { "if-match": etag } },
    body: { priority: null },
  });
  const version: number | undefined = patched.data?.version;

  const feed = await api.GET("/api/v1/tasks/changes", { params: { query: { limit: 100 } } });
  const deletedIds = (feed.data?.changes ?? []).flatMap((change) =>
    "deleted" in change ? [change.id] : [],
  );

  const page = await api.GET("/api/v1/tasks", {
    params: { query: { completed: true, priority: "high", limit: 50 } },
  });
  const cursor = nextCursor(page.response);
  const next = await api.GET("/api/v1/tasks", { params: { query: { cursor } } });

  const deleted = await api.DELETE("/api/v1/tasks/{task_id}", {
    params: { path: { task_id: task.id } },
  });
  const status: number = deleted.response.status;
  void [location, title, completed, version, deletedIds, status];
  return [...(page.data ?? []), ...(next.data ?? [])];
}

export async function refused(): Promise<void> {
  // @ts-expect-error -- "urgent" is not a priority
  await api.POST("/api/v1/tasks", { body: { title: "x", priority: "urgent" } });
  // @ts-expect-error -- a title is required to create a task
  await api.POST("/api/v1/tasks", { body: { description: "no title" } });
  // @ts-expect-error -- task ids are numbers
  await api.GET("/api/v1/tasks/{task_id}", { params: { path: { task_id: "1" } } });
  // @ts-expect-error -- no such path
  await api.GET("/api/v1/task");
  // @ts-expect-error -- POST is not an operation on a task
  await api.POST("/api/v1/tasks/{task_id}", { params: { path: { task_id: 1 } } });
  // @ts-expect-error -- a PATCH needs a body
  await api.PATCH("/api/v1/tasks/{task_id}", { params: { path: { task_id: 1 } } });
  const read = await api.GET("/api/v1/tasks/{task_id}", { params: { path: { task_id: 1 } } });
  // @ts-expect-error -- tasks have no `name`
  void read.data?.name;
}
