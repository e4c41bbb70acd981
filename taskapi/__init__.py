"""Task Management API: a FastAPI service for per-user tasks behind Better Auth tokens."""

__version__ = "1.0.0"
