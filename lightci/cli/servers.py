"""The long-running processes: serve (all in one), web, worker, scheduler."""

from __future__ import annotations

import sys
import threading

from lightci import scheduler as upkeep
from lightci import worker as workers
from lightci.cli.home import ready
from lightci.config import check_token
from lightci.web import app as site


def _workers(args, cfg) -> int:
    return args.workers or max(4, cfg.slots)


def worker(args) -> int:
    cfg = ready(args)
    workers.consumer(cfg, _workers(args, cfg)).run()
    return 0


def serve(args) -> int:
    cfg = ready(args)
    check_token(cfg)
    host = args.host or cfg["server"]["host"]
    port = args.port or cfg["server"]["port"]
    threading.Thread(target=site.serve, args=(host, port), name="lightci-web", daemon=True).start()
    upkeep.start()
    print(f"lightci serving {cfg.home} on http://{host}:{port}", file=sys.stderr, flush=True)
    workers.consumer(cfg, _workers(args, cfg)).run()
    return 0


def web(args) -> int:
    cfg = ready(args)
    check_token(cfg)
    host = args.host or cfg["server"]["host"]
    port = args.port or cfg["server"]["port"]
    print(f"lightci web for {cfg.home} on http://{host}:{port}", file=sys.stderr, flush=True)
    site.serve(host, port)
    return 0


def scheduler(args) -> int:
    ready(args)
    print("lightci scheduler: sweeps, queue expiry, retention", file=sys.stderr, flush=True)
    return upkeep.run_forever()
