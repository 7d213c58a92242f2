"""The queue's outlook: why each queued build waits, and when builds should start and end.

``forecast`` replays the claim's rule (lightci.claims ADMIT_SQL: a free slot, a
free key, the memory budget, a lone build bigger than the budget, starve_after,
then priority and age) over the current queue, on a clock that jumps to each
running build's expected end. Expected durations are the key's recent ones
(key_stat), else the mean of the job's other keys; with none known, the build
and whatever must wait for it get no ETA (null) rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightci import admission
from lightci.config import Settings
from lightci.models import Build, KeyStat, iso

FIELDS = ("waiting_for", "eta_start", "eta_finish")


@dataclass(eq=False)
class Planned:
    """A build as the simulation moves it: queued, then started at `start`, ending at `end`."""

    id: int
    job: str
    number: int
    key: str
    priority: int
    queued_at: float
    need: int
    duration: float | None
    expires: float = float("inf")  # queued_at + queue_timeout: from then on nothing claims it
    start: float | None = None
    end: float | None = None  # None: not known (no duration), so it never ends here

    def label(self, other: Planned | None = None) -> str:
        return (
            f"#{self.number}" if other and other.job == self.job else f"{self.job} #{self.number}"
        )


@dataclass(frozen=True)
class Rule:
    slots: int
    budget: int
    starve_after: int

    def starving(self, t: float, active: list[Planned], queue: list[Planned]) -> Planned | None:
        """The oldest runnable build, once it has waited past starve_after."""
        heads = self.heads(t, active, queue)
        oldest = min(heads, key=lambda q: (q.queued_at, q.id), default=None)
        return oldest if oldest and oldest.queued_at < t - self.starve_after else None

    def heads(self, t: float, active: list[Planned], queue: list[Planned]) -> list[Planned]:
        """The oldest queued build of each key that has no running build, of those the
        claim still takes at t (not past their queue_timeout: they end expired)."""
        busy = {a.key for a in active}
        firsts: dict[str, Planned] = {}
        for q in sorted(queue, key=lambda q: q.id):
            if q.key not in busy and t <= q.expires:
                firsts.setdefault(q.key, q)
        return list(firsts.values())

    def fits(self, build: Planned, active: list[Planned]) -> bool:
        return not active or sum(a.need for a in active) + build.need <= self.budget

    def pick(self, t: float, active: list[Planned], queue: list[Planned]) -> Planned | None:
        """The build the claim would take at time t, or None."""
        if len(active) >= self.slots:
            return None
        starving = self.starving(t, active, queue)
        candidates = [starving] if starving else self.heads(t, active, queue)
        candidates.sort(key=lambda q: (-q.priority, q.id))
        return next((c for c in candidates if self.fits(c, active)), None)


def forecast(
    cfg: Settings, running: list[Build], queued: list[Build], now: float
) -> dict[int, dict[str, Any]]:
    """Build id -> {waiting_for, eta_start, eta_finish} (queued) or {eta_finish} (running)."""
    stats = {s.key: s for s in KeyStat.select()}
    durations = _durations(stats)
    default = admission.default_peak(cfg)
    rule = Rule(cfg.slots, admission.budget(cfg), admission.starve_after(cfg))

    def planned(b: Build, need: int) -> Planned:
        duration = durations.get(b.key, durations.get(b.job + ":"))
        expires = b.queued_at + b.queue_timeout
        return Planned(
            b.id, b.job, b.number, b.key, b.priority, b.queued_at, need, duration, expires
        )

    active = []
    for b in running:
        a = planned(b, max(b.memory_expected or 0, b.memory_peak or 0))  # as the claim counts
        a.start = b.started_at or now
        a.end = None if a.duration is None else max(now, a.start + a.duration)
        active.append(a)
    stat_peak = {key: s.peak for key, s in stats.items() if s.peak}
    queue = [planned(b, b.memory_expected or stat_peak.get(b.key) or default) for b in queued]
    reasons = {q.id: _why(rule, q, active, queue, now) for q in queue}
    if rule.slots > 0:
        _simulate(rule, list(active), list(queue), now)
    out: dict[int, dict[str, Any]] = {a.id: {"eta_finish": iso(a.end)} for a in active}
    for q in queue:
        out[q.id] = {
            "waiting_for": reasons[q.id],
            "eta_start": iso(q.start),
            "eta_finish": iso(q.end),
        }
    return out


def _durations(stats: dict[str, KeyStat]) -> dict[str, float]:
    """Key -> expected seconds; "<job>:" -> the mean over the job's keys (a key's first build)."""
    known = {key: s.duration for key, s in stats.items() if s.duration is not None}
    by_job: dict[str, list[float]] = {}
    for key, seconds in known.items():
        by_job.setdefault(key.split(":", 1)[0] + ":", []).append(seconds)
    # sum/len, not statistics.mean: `lightci trigger` imports this module, and statistics
    # (fractions, random) costs it ~2 ms for a forecast in seconds.
    return {**known, **{job: sum(values) / len(values) for job, values in by_job.items()}}


def _simulate(rule: Rule, active: list[Planned], queue: list[Planned], now: float) -> None:
    """Start builds as the claim would, advancing to the next expected end; sets start/end."""
    t = now
    while queue:
        chosen = rule.pick(t, active, queue)
        if chosen is not None:
            chosen.start = t
            chosen.end = None if chosen.duration is None else t + chosen.duration
            active.append(chosen)
            queue.remove(chosen)
            continue
        ends = [a.end for a in active if a.end is not None]
        if not ends:
            return  # what runs has no known end: nothing after it has an ETA
        t = max(t, min(ends))
        active = [a for a in active if a.end is None or a.end > t]


def _why(
    rule: Rule, build: Planned, active: list[Planned], queue: list[Planned], now: float
) -> str:
    """Why the claim does not take this build now, in the words the queue shows."""
    if rule.slots <= 0:
        return "paused"
    ahead = [a for a in active if a.key == build.key]
    ahead += [q for q in queue if q.key == build.key and q.id < build.id]
    if ahead:
        return f"key busy ({ahead[0].label(build)})"
    if len(active) >= rule.slots:
        return f"slots {len(active)}/{rule.slots}"
    if not rule.fits(build, active):
        need = admission.gb(build.need)
        if build.need > rule.budget:
            whole = admission.gb(rule.budget)
            return f"memory: needs ~{need} GB, more than the {whole} GB budget: runs alone"
        free = admission.gb(max(0, rule.budget - sum(a.need for a in active)))
        return f"memory: needs ~{need} GB, {free} GB free in the budget"
    chosen = rule.pick(now, active, queue)
    if chosen is None or chosen is build:
        starving = rule.starving(now, active, queue)
        if starving is not None and starving is not build:
            return f"{starving.label(build)} waited over {rule.starve_after} s: nothing passes it"
        return "next: starting"
    if rule.starving(now, active, queue) is chosen:
        return f"{chosen.label(build)} waited over {rule.starve_after} s: nothing passes it"
    if chosen.priority == build.priority:  # the same priority: it came first
        return f"queued earlier: {chosen.label(build)} goes first"
    return f"priority: {chosen.label(build)} (priority {chosen.priority}) goes first"
