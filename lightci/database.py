"""The one place a database is made from the settings: SQLite at HOME/lightci.db, or a URL."""

from __future__ import annotations

import sqlite3
import time

from peewee import Database, SqliteDatabase

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
