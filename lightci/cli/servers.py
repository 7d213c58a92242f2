"""The long-running processes: serve (all in one), web, scheduler (worker: cli.workers)."""

from __future__ import annotations

import sys
import threading

from lightci import scheduler as upkeep
from lightci import sender
from lightci import worker as workers
from lightci.cli import control
from lightci.cli.home import ready
from lightci.cli.workers import threads
from lightci.config import check_token
from lightci.web import app as site


def _listen(args, cfg) -> list[site.Listener]:
    """The ports, bound before anything runs: a taken one ends the command (exit 2)."""
    return site.listen(args.host or cfg["server"]["host"], args.port or cfg["server"]["port"])


def _where(listeners: list[site.Listener]) -> str:
    urls = [f"{x.url}/apps/<job>/" if x.name == "apps" else x.url for x in listeners]
    return ", apps on ".join(urls)


def serve(args) -> int:
    workers.lean_memory()  # before any thread starts
    cfg = ready(args)
    check_token(cfg)
    listeners = _listen(args, cfg)
    sender.served_at[:] = [listeners[0].url]  # links in statuses and mails, with no [server] url
    consumer = workers.consumer(cfg, threads(args, cfg))  # hears wake-ups from here on
    threading.Thread(target=site.run, args=(listeners,), name="lightci-web", daemon=True).start()
    upkeep.start(sweeps=False)  # the worker's own sweeper sweeps: it rests with the worker
    control.offer(cfg.home)
    print(f"lightci serving {cfg.home} on {_where(listeners)}", file=sys.stderr, flush=True)
    consumer.run()
    return 0


def web(args) -> int:
    cfg = ready(args)
    check_token(cfg)
    listeners = _listen(args, cfg)
    control.offer(cfg.home)
    print(f"lightci web for {cfg.home} on {_where(listeners)}", file=sys.stderr, flush=True)
    site.run(listeners)
    return 0


def scheduler(args) -> int:
    control.offer(ready(args).home)
    print("lightci scheduler: sweeps, queue expiry, retention", file=sys.stderr, flush=True)
    return upkeep.run_forever()
