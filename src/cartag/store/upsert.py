"""SQL helpers the repositories share.

``upsert``: dialect-aware INSERT ... ON CONFLICT, so concurrent writers never
collide on a key, with the rows in key order, so they never deadlock. ``chunked``:
keeps IN (...) lists well under SQLite's and PostgreSQL's parameter limits.
``in_values``: a membership test that costs one parameter on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from cartag.store.tables import Base

_T = TypeVar("_T")


def chunked(values: Iterable[_T], size: int = 500) -> Iterator[list[_T]]:
    """Split values into lists of at most ``size``, in order."""
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def in_values(
    session: Session, column: InstrumentedAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter.

    An IN list binds one parameter per value, and for the hundreds of values of a
    classify request, rendering and parsing them cost more than the indexed lookup
    itself (the psycopg driver re-parses the statement for every list length).
    """
    items = list(values)
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam(None, items, type_=postgresql.ARRAY(column.type))
        return column == any_(array)
    return column.in_(items)


def upsert(
    session: Session,
    model: type[Base],
    values: dict[str, Any] | Sequence[dict[str, Any]],
    *,
    index_elements: Sequence[str],
    update: Sequence[str] | None = None,
) -> None:
    """Insert rows, or update ``update`` columns (all but the keys) of those that exist.

    Args:
        session: Session in a write transaction.
        model: The mapped class of the table.
        values: Column values of one row, or of many rows with the same columns
            (sent as one executemany, which is what makes a 1,000-image batch cheap).
        index_elements: Columns of the unique constraint to resolve conflicts on.
        update: Columns to overwrite on conflict; None means every non-key column,
            an empty sequence means "insert if absent, else leave it".

    Lock order: every writer takes a table's rows in key order (this function sorts
    them; :func:`cartag.store.images.touch_urls` locks its rows so), and the tables in
    one order within a transaction: ``images``, then ``urls``, then the rest
    (embeddings). A transaction writing ``urls`` before ``images`` could hold a URL that
    a store of new answers (images, then URLs) waits for while waiting for an image
    that store holds. A transaction that cannot keep the order (the 304s' URLs recorded
    beside downloads' copies) writes in two transactions instead
    (:func:`cartag.pipeline.outcomes.match_known`).
    """
    rows = [values] if isinstance(values, dict) else list(values)
    if not rows:
        return
    # On PostgreSQL each row stays locked until commit (a conflicting insert waits for
    # the other transaction to end): two requests writing the same keys in their own
    # orders could each hold a row the other waits for, a deadlock (a 503). In key
    # order, the second writer waits for the first instead. (SQLite: one writer at a time.)
    # The same holds across tables: see the lock order in the docstring.
    rows.sort(key=lambda row: tuple(row[c] for c in index_elements))
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(model)
    columns = [c for c in rows[0] if c not in index_elements] if update is None else list(update)
    if columns:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(index_elements),
            set_={c: stmt.excluded[c] for c in columns},
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(index_elements))
    session.execute(stmt, rows)
