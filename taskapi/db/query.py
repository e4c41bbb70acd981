"""Statements compiled once, each with the one row type it returns.

A `Query` holds a statement twice: as SQLAlchemy Core (run through SQLAlchemy, the SQLite
default) and as PostgreSQL SQL with `$1..$n` placeholders (run on asyncpg directly). Each
side has its own row decoder, so a query returns the same type `R` on every backend: a
plain mapping of columns (`Query.of`), or whatever its decoders build (`Query.shaped`, for
example a task already rendered as JSON bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql.base import Executable

Row = dict[str, Any]
"""A row as a mapping of column names to values (what `Query.of` returns)."""
Params = Mapping[str, Any]
R = TypeVar("R")

_POSTGRES = asyncpg_dialect()  # type: ignore[no-untyped-call]


def _as_dict(record: Any) -> Row:
    return dict(record)


def _same(row: Row) -> Row:
    return row


@dataclass(frozen=True, slots=True)
class Query(Generic[R]):
    """A statement and its PostgreSQL SQL, compiled once, returning rows of type `R`.

    - `statement`, `from_columns`: SQLAlchemy runs the statement; each row, as a mapping of
      its columns (plain `str` keys), becomes an `R`.
    - `sql`, `names`, `from_record`: asyncpg runs `sql` with the parameters named in
      `names`, in order; each record becomes an `R`.
    """

    statement: Executable
    from_columns: Callable[[Row], R]
    sql: str
    names: tuple[str, ...]
    from_record: Callable[[Any], R]
    constants: Mapping[str, Any]
    """The values of parameters the statement itself fixes (literals such as `+ 1`)."""

    @staticmethod
    def of(statement: Executable, postgres: Executable | None = None) -> Query[Row]:
        """A query returning plain rows; `postgres`, if given, is its PostgreSQL variant."""
        source = statement if postgres is None else postgres
        return Query.shaped(statement, _same, source, _as_dict)

    @staticmethod
    def shaped(
        statement: Executable,
        from_columns: Callable[[Row], R],
        postgres: Executable,
        from_record: Callable[[Any], R],
    ) -> Query[R]:
        """A query whose rows are built by `from_columns` (SQLAlchemy's rows, as mappings) or
        `from_record` (asyncpg's records of the `postgres` statement)."""
        compiled = postgres.compile(dialect=_POSTGRES)  # type: ignore[attr-defined]
        names = tuple(compiled.positiontup or ())
        constants = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        return Query(statement, from_columns, compiled.string, names, from_record, constants)

    def arguments(self, params: Params) -> Sequence[Any]:
        """The positional arguments of `sql`: `params` and the statement's constants."""
        if not self.constants:
            return [params[name] for name in self.names]
        constants = self.constants
        return [constants[name] if name in constants else params[name] for name in self.names]
