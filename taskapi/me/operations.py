"""The caller's profile and counts, and deleting every row of the caller."""

from __future__ import annotations

from sqlalchemy import ScalarSelect, bindparam, delete, func, select, true
from sqlalchemy.sql.elements import ColumnElement

from taskapi.db import Query, Row, UnitOfWork
from taskapi.db.failures import UserRowMissingError
from taskapi.models import lists, tasks, users
from taskapi.tasks.operations import Reply
from taskapi.users.service import UserProvisioner

ME = users.c.id == bindparam("owner_id")


def _count(*condition: ColumnElement[bool]) -> ScalarSelect[int]:
    return select(func.count()).where(*condition).scalar_subquery()


PROFILE: Query[Row] = Query.of(
    select(
        users.c.id,
        users.c.email,
        users.c.name,
        users.c.avatar_url,
        users.c.created_at,
        users.c.updated_at,
        _count(tasks.c.user_id == bindparam("owner_id")).label("tasks"),
        _count(tasks.c.user_id == bindparam("owner_id"), tasks.c.completed == true()).label(
            "completed_tasks"
        ),
        _count(lists.c.user_id == bindparam("owner_id")).label("lists"),
    ).where(ME)
)
# One statement, so one transaction on every backend: the user's row, and by its foreign
# keys (ON DELETE CASCADE) every task, list, label, idempotency key and tombstone of theirs.
DELETE_ME: Query[Row] = Query.of(delete(users).where(ME).returning(users.c.id))


async def get_me(work: UnitOfWork, owner_id: str) -> Row:
    """The caller's provisioned profile and counts of tasks, completed tasks and lists."""
    row = await work.fetch_one(PROFILE, {"owner_id": owner_id})
    if row is None:  # deleted by another worker, whose provisioner knew: run again afresh
        raise UserRowMissingError(owner_id, retry_after=1)
    return row


async def delete_me(work: UnitOfWork, owner_id: str, provisioner: UserProvisioner) -> Reply:
    """Delete every row of the caller; the next request with a token provisions afresh."""
    await work.fetch_one(DELETE_ME, {"owner_id": owner_id})
    work.after_commit(lambda: provisioner.forget(owner_id))
    return Reply(204)
