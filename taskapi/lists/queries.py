"""List statements, every one built from the owner filter `OWNED_LISTS`."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, insert, select, update

from taskapi.db import Query, Row
from taskapi.models import lists

OWNED_LISTS = lists.c.user_id == bindparam("owner_id")
THIS_LIST = lists.c.id == bindparam("list_id")
LIST_COLUMNS = (lists.c.id, lists.c.name, lists.c.created_at, lists.c.updated_at)

GET_LIST: Query[Row] = Query.of(select(*LIST_COLUMNS).where(OWNED_LISTS, THIS_LIST))
LIST_EXISTS: Query[Row] = Query.of(select(lists.c.id).where(OWNED_LISTS, THIS_LIST))
ALL_LISTS: Query[Row] = Query.of(
    select(*LIST_COLUMNS)
    .where(OWNED_LISTS, lists.c.id > bindparam("after_id"))
    .order_by(lists.c.id)
    .limit(bindparam("page_size"))
)
CREATE_LIST: Query[Row] = Query.of(
    insert(lists)
    .values(
        user_id=bindparam("owner_id"),
        name=bindparam("name"),
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(*LIST_COLUMNS)
)
RENAME_LIST: Query[Row] = Query.of(
    update(lists)
    .where(OWNED_LISTS, THIS_LIST)
    .values(name=bindparam("name"), updated_at=bindparam("now"))
    .returning(*LIST_COLUMNS)
)
DELETE_LIST: Query[Row] = Query.of(
    delete(lists).where(OWNED_LISTS, THIS_LIST).returning(lists.c.id)
)
LOCK_LIST: Query[Row] = Query.of(select(lists.c.id).where(OWNED_LISTS, THIS_LIST).with_for_update())
"""The owner's list, locked until the commit against writes and against tasks' foreign key
checks (a task created into it meanwhile waits, then finds it gone)."""
KEEP_LIST: Query[Row] = Query.of(
    select(lists.c.id).where(OWNED_LISTS, THIS_LIST).with_for_update(read=True, key_share=True)
)
"""The owner's list, kept from deletion until the commit (tasks moved into it)."""
