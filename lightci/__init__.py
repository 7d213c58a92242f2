"""lightci: a lightweight, self-hosted CI/CD server for one small VPS.

The package is layered, every import pointing down (README, "Architecture"):
leaves (errors, config, logs, models), plumbing (wakeups, schedule, workspace,
webhooks, jobs), domain (builds, claims), execution (runner, sandbox, deploy,
container, cgroup, routes), operations (recovery, retention, metrics) and the
edges (cli, worker, scheduler, web, proxy, tasks). setup.cfg's import-linter
contract keeps it so.
"""

from lightci.errors import UserError

__version__ = "0.1.0"

__all__ = ["UserError", "__version__"]
