"""Build ids are never handed out twice: a status link or a bookmark to /builds/<id> keeps
meaning the build it was made for, after its job is deleted or a cleanup removed it."""

from __future__ import annotations

import re
import sqlite3

from tests.api_jobs import (
    jobs_fixture,  # noqa: F401 - the jobs fixture
    trigger,
)


def _table_sql(home) -> str:
    with sqlite3.connect(home.path / "lightci.db") as conn:
        return conn.execute("SELECT sql FROM sqlite_master WHERE name = 'build'").fetchone()[0]


def test_a_deleted_job_s_build_ids_are_not_given_to_the_next_builds(web, jobs):
    """SQLite's rowid gave max(id) + 1 again: a new job's first build was the deleted job's."""
    made = web.post(
        "/api/jobs", json_body={"name": "gone", "toml": "", "scripts": {"build.sh": "true"}}
    )
    assert made.status == 201
    first = web.post("/api/jobs/gone/builds").json()["id"]
    assert web.request("DELETE", "/api/jobs/gone?cancel=1").status == 200
    assert trigger(web).json()["id"] == first + 1
    assert "AUTOINCREMENT" in _table_sql(jobs)


def test_an_older_home_s_build_table_is_made_again_with_kept_ids(jobs, bound):
    """A home from before: the build table without AUTOINCREMENT. Its rows and their stages
    stay (dropping the old table must not cascade), and from then on no id comes back."""
    from lightci import builds, database, models

    jobs.job("lib", "", build="true\n")
    ids = [builds.trigger("lib").id for _ in range(3)]
    models.Stage.create(build=ids[0], name="build", position=0, started_at=1.0)
    models.db.close()
    with sqlite3.connect(jobs.path / "lightci.db") as conn:  # as an older lightci made it:
        conn.execute("PRAGMA foreign_keys = OFF")  # no AUTOINCREMENT, and no newer columns
        old = _table_sql(jobs).replace(" AUTOINCREMENT", "").replace('"build"', '"build_old"', 1)
        old = re.sub(r', "(pr_base|priority)" [^,]*', "", old)  # neither is last
        conn.execute(old)
        kept = [r[1] for r in conn.execute("PRAGMA table_info(build_old)")]
        assert "pr_base" not in kept and "priority" not in kept and "job" in kept
        columns = ", ".join(f'"{c}"' for c in kept)
        conn.execute(f"INSERT INTO build_old ({columns}) SELECT {columns} FROM build")
        conn.execute("DROP TABLE build")
        conn.execute("ALTER TABLE build_old RENAME TO build")
        conn.execute("PRAGMA user_version = 0")
    assert "AUTOINCREMENT" not in _table_sql(jobs)
    database.ensure_schema(
        models.db, models.MODELS, models.NEW_BUILD_COLUMNS, [models.ONE_ACTIVE_PER_KEY]
    )
    assert "AUTOINCREMENT" in _table_sql(jobs)
    assert [b.id for b in models.Build.select().order_by(models.Build.id)] == ids
    assert {b.priority for b in models.Build.select()} == {0}  # the added column's default
    assert models.Stage.select().where(models.Stage.build == ids[0]).count() == 1
    with sqlite3.connect(jobs.path / "lightci.db") as conn:
        names = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'build'")
        }
    assert "build_one_active_per_key" in names and "build_job_number" in names
    models.Build.delete().where(models.Build.id == ids[-1]).execute()
    assert builds.trigger("lib").id == ids[-1] + 1
