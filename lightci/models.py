"""The job table: Peewee models, bound to the database the settings name (lightci.database).

Nothing connects at import; each thread opens its own connection on first use.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    DatabaseProxy,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

from lightci import database
from lightci.config import Settings

db = DatabaseProxy()

# Every state of a build, named once: SQL, pages and scripts use these.
QUEUED = "queued"
RUNNING = "running"
DEPLOYING = "deploying"
SUCCESS = "success"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
EXPIRED = "expired"
LOST = "lost"
ACTIVE = (RUNNING, DEPLOYING)  # states that hold the key and a slot
FINAL = (SUCCESS, FAILED, CANCELLED, TIMEOUT, EXPIRED, LOST)
STATES = (QUEUED, *ACTIVE, *FINAL)
OPEN = (QUEUED, *ACTIVE)  # not final yet

# A deployment's states: checking -> live -> draining -> retired; failed; stopped.
CHECKING = "checking"
LIVE = "live"
DRAINING = "draining"
RETIRED = "retired"
STOPPED = "stopped"
WITH_CONTAINER = (CHECKING, LIVE, DRAINING)


def sql_list(states: tuple[str, ...]) -> str:
    """('running', 'deploying') for an IN clause; the names are constants, never input."""
    return "(" + ", ".join(f"'{s}'" for s in states) + ")"


ACTIVE_IN = sql_list(ACTIVE)
OPEN_IN = sql_list(OPEN)


# Timestamps are epoch seconds as DoubleField: a FloatField is REAL (4 bytes) on
# PostgreSQL, which rounds today's epoch to the nearest 128 s.
class BaseModel(Model):
    class Meta:
        database = db


class Build(BaseModel):
    """One requested run of a job: the row is the truth, a queue message only a wake-up."""

    id = database.KeptId()
    job = CharField(index=True)
    number = IntegerField()
    key = CharField()
    status = CharField(default=QUEUED)
    branch = CharField(default="")
    commit = CharField(default="")
    params = TextField(default="{}")
    trigger = CharField(default="cli")
    queued_at = DoubleField()
    started_at = DoubleField(null=True)
    finished_at = DoubleField(null=True)
    exit_code = IntegerField(null=True)
    stage = CharField(default="")
    error = TextField(default="")
    # The lease: who runs it, and when that worker last proved it was alive.
    host = CharField(default="")
    pid = IntegerField(null=True)
    pgid = IntegerField(null=True)
    heartbeat_at = DoubleField(null=True)
    cancel_requested = TextField(default="")  # the reason, once someone asked
    timeout = IntegerField()
    queue_timeout = IntegerField()
    delivery = CharField(null=True, unique=True)  # webhook delivery id (redeliveries)
    retry_of = IntegerField(null=True)
    # Where a webhook's build came from (section 8): a PR's number and target, a tag.
    pr = IntegerField(null=True)
    pr_base = CharField(default="")
    pr_ref = CharField(default="")  # the forge's ref that holds the PR's head
    fork = BooleanField(default=False)
    tag = CharField(default="")
    forge = CharField(default="")  # the webhook's forge: github | gitea | gitlab
    # Admission (lightci.admission): higher priority is claimed first across keys;
    # memory_expected is the job's `memory` at trigger, then what the claim admitted it with;
    # memory_peak is what it used (cgroup peak or the process tree's RSS), once measured.
    priority = IntegerField(default=0)
    memory_expected = BigIntegerField(null=True)
    memory_peak = BigIntegerField(null=True)

    class Meta:
        indexes = (
            (("job", "number"), True),
            (("status", "id"), False),
            (("key", "status"), False),
            (("job", "commit"), False),  # a replayed push finds its earlier build
        )

    @property
    def param_dict(self) -> dict[str, str]:
        return json.loads(self.params or "{}")

    @property
    def worker(self) -> str:
        return f"{self.pid}@{self.host}" if self.pid else ""

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or time.time()
        return round(end - self.started_at, 3)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def label(self) -> str:
        return f"{self.job} #{self.number}"


class Stage(BaseModel):
    """One stage of a build, with its timings (the build page shows them)."""

    build = ForeignKeyField(Build, backref="stages", on_delete="CASCADE")
    name = CharField()
    position = IntegerField()
    started_at = DoubleField()
    finished_at = DoubleField(null=True)
    exit_code = IntegerField(null=True)


class Deployment(BaseModel):
    """One container of a job's blue/green pair, from its start to its retirement.

    The row drives the deploy (the scheduler advances rows whose next_check_at
    is due) and is the route table: the proxy in every web process serves the
    job's row in state "live". Builds are pruned by retention, deployments are
    history, so build_id is a plain number, not a foreign key.
    """

    job = CharField()
    build_id = IntegerField(null=True)  # None for a rollback
    build_number = IntegerField(null=True)
    image = CharField()  # the tag, lightci/<job>:<commit[:12] or build-<id>>
    image_id = CharField()  # what actually runs: immutable, even if the tag moves
    slot = CharField()  # blue | green
    container = CharField(default="")
    address = CharField(default="")  # host:port the proxy forwards to
    state = CharField()  # checking -> live -> draining -> retired; failed; stopped
    health = CharField(default="")  # "ok" | "unhealthy", from the periodic checks of a live one
    tries = IntegerField(default=0)
    next_check_at = DoubleField(null=True)
    last_error = TextField(default="")
    trigger = CharField(default="")  # "build #12 (webhook)", "rollback (cli)", ...
    created_at = DoubleField()
    switched_at = DoubleField(null=True)
    finished_at = DoubleField(null=True)
    error = TextField(default="")

    class Meta:
        indexes = ((("job", "state"), False),)


class Session(BaseModel):
    """One browser's login. The cookie names it; logout deletes it, so every web
    process stops taking that cookie at once."""

    nonce = CharField(primary_key=True)
    created_at = DoubleField()


class KeyStat(BaseModel):
    """What a key's recent builds needed: the claim's expected peak, the queue's ETA."""

    key = CharField(primary_key=True)
    peak = BigIntegerField(null=True)  # bytes: the highest peak of its last few builds
    duration = DoubleField(null=True)  # seconds: the mean of its last few successful builds
    updated_at = DoubleField()

    class Meta:
        table_name = "key_stat"


class Image(BaseModel):
    """One component image of a build ([[images]]): pushed with its digest, or failed."""

    build_id = IntegerField(index=True)
    job = CharField()
    component = CharField()
    ref = CharField()  # repository:tag
    tag = CharField()
    digest = CharField(default="")
    state = CharField()  # pushed | built (no push) | failed
    error = TextField(default="")
    created_at = DoubleField()


class Bump(BaseModel):
    """One GitOps change of a deployment repository: a bump, a rollback or a re-apply."""

    job = CharField(index=True)
    build_id = IntegerField(null=True)  # the build (or rollback action) that made it
    build_number = IntegerField(null=True)
    kind = CharField()  # bump | rollback | reapply
    state = CharField()  # pushed | unchanged | failed
    repo = CharField()
    branch = CharField()
    file = CharField()
    commit = CharField(default="")  # the deployment repository's new commit
    before = TextField(default="{}")  # path -> value before, JSON
    after = TextField(default="{}")  # path -> value written, JSON
    of = IntegerField(null=True)  # the bump a rollback reverts or a re-apply repeats
    error = TextField(default="")
    created_at = DoubleField()


class Delivery(BaseModel):
    """The outbox (lightci.outbox): a status or notification a state change owes someone.
    `body` holds what to send, URLs included, and is never shown."""

    build = ForeignKeyField(Build, backref="deliveries", on_delete="CASCADE")
    kind = CharField()  # status | webhook | email
    target = CharField()  # for people, never a URL: "github org/app", "notify #1"
    event = CharField()  # the build state it reports
    state = CharField(default="pending")  # pending | retrying | sent | failed
    tries = IntegerField(default=0)
    next_at = DoubleField()
    created_at = DoubleField()
    sent_at = DoubleField(null=True)
    answer = TextField(default="")
    body = TextField(default="{}")

    class Meta:
        indexes = (
            (("build", "kind", "target", "event"), True),  # once per (build, state, target)
            (("state", "next_at"), False),
        )


MODELS = [Build, Stage, Deployment, Session, Delivery, Image, Bump, KeyStat]

# Columns that came after the build table did: an older home gains them at bind.
NEW_BUILD_COLUMNS = {
    "pr": "INTEGER",
    "pr_base": "VARCHAR(255) NOT NULL DEFAULT ''",
    "pr_ref": "VARCHAR(255) NOT NULL DEFAULT ''",
    "fork": "BOOLEAN NOT NULL DEFAULT FALSE",
    "tag": "VARCHAR(255) NOT NULL DEFAULT ''",
    "forge": "VARCHAR(255) NOT NULL DEFAULT ''",
    "priority": "INTEGER NOT NULL DEFAULT 0",
    "memory_expected": "BIGINT",
    "memory_peak": "BIGINT",
}

# The key rule, held by the database itself: a bug in the claim cannot start
# two builds of one key, the second UPDATE fails instead.
ONE_ACTIVE_PER_KEY = (
    "CREATE UNIQUE INDEX IF NOT EXISTS build_one_active_per_key "
    f"ON build (key) WHERE status IN {ACTIVE_IN}"
)


_bound: Settings | None = None
_schema_ready = False
_schema_lock = threading.Lock()
_bind_lock = threading.Lock()


def bind(cfg: Settings) -> None:
    """Point the models at the settings' database (once per process and home)."""
    global _bound, _schema_ready
    if _bound is not None and _bound.home == cfg.home:
        return
    # Huey's worker threads all bind at start: a second initialize() would swap
    # the database under the first one's open schema transaction (left locked).
    with _bind_lock:
        if _bound is not None and _bound.home == cfg.home:
            return
        if _bound is not None and not db.is_closed():
            db.close()
        cfg.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not cfg["database"]["url"]:
            database.use_wal(cfg.db_file)
        db.initialize(database.make_database(cfg))
        _schema_ready = False
        ensure_schema()
        _bound = cfg


def ensure_schema() -> None:
    global _schema_ready
    if _schema_ready:
        return
    with _schema_lock:
        if not _schema_ready:
            database.ensure_schema(db, MODELS, NEW_BUILD_COLUMNS, [ONE_ACTIVE_PER_KEY])
            _schema_ready = True


def run_sql(query: str, *params):
    """Plain SQL with '?' placeholders, on whichever database is bound (PostgreSQL wants %s)."""
    if db.param != "?":
        query = query.replace("?", db.param)
    return db.execute_sql(query, params)


def is_sqlite() -> bool:
    return isinstance(db.obj, SqliteDatabase)


_writers = threading.RLock()


@contextlib.contextmanager
def write_lock():
    """A transaction that serialises writers: the claim, the trigger, a stage's rows.

    SQLite: BEGIN IMMEDIATE (a deferred BEGIN that upgrades to a write fails
    under contention). PostgreSQL: an exclusive lock on the build table.
    """
    if is_sqlite():
        # Threads of one process queue on a mutex: SQLite's own busy handler sleeps
        # in steps of up to 100 ms, which a webhook burst, or six builds starting and
        # ending together, turns into tail latency.
        with _writers, db.atomic("IMMEDIATE") as txn:
            yield txn
    else:
        with db.atomic() as txn:
            db.execute_sql("LOCK TABLE build IN SHARE ROW EXCLUSIVE MODE")
            yield txn


def as_dict(build: Build) -> dict[str, Any]:
    """A build as the API, `show --json` and the pages see it."""
    return {
        "id": build.id,
        "job": build.job,
        "number": build.number,
        "key": build.key,
        "status": build.status,
        "branch": build.branch,
        "commit": build.commit,
        "params": build.param_dict,
        "trigger": build.trigger,
        "queued_at": iso(build.queued_at),
        "started_at": iso(build.started_at),
        "finished_at": iso(build.finished_at),
        "duration": build.duration,
        "exit_code": build.exit_code,
        "stage": build.stage,
        "worker": build.worker,
        "pid": build.pid,
        "heartbeat_at": iso(build.heartbeat_at),
        "error": build.error,
        "retry_of": build.retry_of,
        "pr": build.pr,
        "pr_base": build.pr_base,
        "tag": build.tag,
        "deliveries": deliveries(build),
        "priority": build.priority,
        "memory_peak": build.memory_peak,
    }


def deliveries(build: Build) -> list[dict[str, Any]]:
    """What the build's state changes sent, and how it went: never the URL or the token."""
    rows = Delivery.select().where(Delivery.build == build.id).order_by(Delivery.id)
    names = ("kind", "target", "event", "state", "tries", "answer")
    return [{**{n: getattr(d, n) for n in names}, "sent_at": iso(d.sent_at)} for d in rows]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
