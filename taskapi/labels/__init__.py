"""Labels: `GET /api/v1/labels` (with counts), `PATCH`/`DELETE /api/v1/labels/{name}`."""
