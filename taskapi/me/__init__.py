"""The caller's own data: `GET /api/v1/me` (profile and counts), `DELETE /api/v1/me`."""
