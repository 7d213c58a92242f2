"""The one place a database is made from the settings: SQLite at HOME/lightci.db, or a URL.

The `lightci` program reads the same settings before peewee loads: on SQLite it marks
the PostgreSQL and MySQL drivers missing (lightci.cli.drivers.skip_other_drivers), so that
process, which binds once, never pays for them.
"""

from __future__ import annotations

import sqlite3
import time
import zlib

from peewee import SQL, AutoField, Database, NodeList, SqliteDatabase

from lightci.config import Settings


def make_database(cfg: Settings) -> Database:
    """The one place a database is made: SQLite at HOME/lightci.db, or [database] url."""
    url = cfg["database"]["url"]
    if url:  # optional: the PostgreSQL driver loads only for a server that names one
        from playhouse.db_url import connect

        return connect(url)
    return SqliteDatabase(
        str(cfg.db_file),
        timeout=30,
        pragmas={
            "synchronous": "normal",
            "busy_timeout": 30000,
            "foreign_keys": 1,
            "cache_size": -16000,
        },
    )


def use_wal(path) -> None:
    """Switch the file to WAL once (it persists), retrying while others do the same.

    The switch upgrades a read lock to a write lock, which SQLite refuses at
    once (no busy wait) when several processes open a new database together.
    """
    if _is_wal(path):  # every CLI call binds: a read of the header, not a connection
        return
    deadline = time.time() + 30
    while True:
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(0.01)
        finally:
            conn.close()


def _is_wal(path) -> bool:
    """The file's header says WAL: its read and write versions (bytes 18, 19) are 2."""
    try:
        with open(path, "rb") as f:
            return f.read(20)[18:20] == b"\x02\x02"
    except FileNotFoundError:
        return False


class KeptId(AutoField):
    """An id never handed out twice. SQLite gives the highest rowid again once its row is
    deleted (a deleted job's builds, a cleanup): a commit status's link or a bookmark to
    /builds/57 would show another build. AUTOINCREMENT never does; PostgreSQL's serial
    never does either."""

    def ddl(self, ctx):
        node = super().ddl(ctx)
        if isinstance(self.model._meta.database.obj, SqliteDatabase):
            return NodeList((node, SQL("AUTOINCREMENT")))
        return node


def ensure_schema(db: Database, models: list, new_columns: dict[str, str], extra: list[str]):
    """Create what is missing: tables, the build table's newer columns, extra DDL.

    A stamp of everything declared is kept in SQLite's user_version, so a home
    this version made already costs one PRAGMA (every CLI call binds).
    """
    stamp = _stamp(models, new_columns, extra)
    sqlite = isinstance(db.obj, SqliteDatabase)
    # The connection this opens stays open for the thread's next query (a CLI's one
    # insert): a close would cost a reopen, and the last connection's close a checkpoint.
    # fetchall() ends the statement, so no read transaction outlives the check.
    if sqlite and db.execute_sql("PRAGMA user_version").fetchall() == [(stamp,)]:
        return
    with db.connection_context():
        if sqlite:  # a table made again (_keep_ids) must not cascade: off outside the transaction
            db.execute_sql("PRAGMA foreign_keys = OFF")
        try:
            _create(db, models, new_columns, extra, stamp, sqlite)
        finally:
            if sqlite:
                db.execute_sql("PRAGMA foreign_keys = ON")


def _create(db: Database, models, new_columns, extra, stamp: int, sqlite: bool) -> None:
    # On PostgreSQL concurrent CREATE ... IF NOT EXISTS race: an advisory lock.
    with db.atomic("IMMEDIATE") if sqlite else db.atomic():
        if not sqlite:
            db.execute_sql("SELECT pg_advisory_xact_lock(7461)")
        db.create_tables(models, safe=True)
        have = {column.name for column in db.get_columns("build")}
        for name, ddl in new_columns.items():
            if name not in have:
                db.execute_sql(f'ALTER TABLE build ADD COLUMN "{name}" {ddl}')
        # Once every column is there (a copy gets them all), and before the indexes and
        # the extra DDL, which a table made again has lost.
        if sqlite and any([_keep_ids(db, model) for model in models]):
            db.create_tables(models, safe=True)
        for sql in extra:
            db.execute_sql(sql)
        if sqlite:
            db.execute_sql(f"PRAGMA user_version = {stamp}")


def _keep_ids(db: Database, model) -> bool:
    """A SQLite table whose KeptId column was made without AUTOINCREMENT, made again with it
    (SQLite cannot alter a column): a copy of every row, then the copy takes the name. Its
    indexes are made again by create_tables."""
    table = model._meta.table_name
    found = db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if not isinstance(model._meta.primary_key, KeptId) or found is None:
        return False
    if "AUTOINCREMENT" in found[0].upper():
        return False
    have = {column.name for column in db.get_columns(table)}
    columns = ", ".join(
        f'"{f.column_name}"' for f in model._meta.sorted_fields if f.column_name in have
    )

    class Copy(model):
        class Meta:
            table_name = f"{table}__kept"

    db.execute_sql(f'DROP TABLE IF EXISTS "{table}__kept"')
    Copy._schema.create_table(safe=False)
    db.execute_sql(f'INSERT INTO "{table}__kept" ({columns}) SELECT {columns} FROM "{table}"')
    db.execute_sql(f'DROP TABLE "{table}"')
    db.execute_sql(f'ALTER TABLE "{table}__kept" RENAME TO "{table}"')
    return True


def _stamp(models: list, new_columns: dict[str, str], extra: list[str]) -> int:
    """A number that changes with any table, column, index or kind of id declared."""
    shape = [extra, sorted(new_columns)]
    shape += [
        (m._meta.table_name, m._meta.sorted_field_names, m._meta.indexes)
        + ((type(m._meta.primary_key).__name__,) if isinstance(m._meta.primary_key, KeptId) else ())
        for m in models
    ]
    return zlib.crc32(repr(shape).encode()) & 0x7FFFFFFF


def column_list(fields) -> str:
    """The quoted column names of model fields, for plain SQL on the hot path."""
    return ", ".join(f'"{f.column_name}"' for f in fields)
