"""A job's memory limit on the host: the memory cgroup ends the stage, not the VPS."""

from __future__ import annotations

import glob

HUNGRY = """
# tail keeps its last "line" in memory: 200 MB of zeros without a newline.
head -c 200000000 /dev/zero | tail > /dev/null
echo survived
"""


def test_a_host_build_over_its_memory_limit_fails_as_out_of_memory_or_says_why_not(home):
    home.job("hungry", 'memory = "32M"', build=HUNGRY)
    home.start_worker()
    build_id = home.trigger("hungry")
    [row] = home.wait_for([build_id])
    log = home.log(build_id)
    if "memory limit 32M not applied: cannot make a cgroup" in log:
        assert row["status"] == "success", log  # unlimited, and the log said so
        return
    assert "memory limit 32M through cgroup v" in log
    assert row["status"] == "failed", log
    assert row["error"] == "out of memory (limit 32M)"
    leftovers = glob.glob(f"/sys/fs/cgroup/**/lightci/build-{build_id}-*", recursive=True)
    assert leftovers == []  # the stage's cgroup is removed with it
