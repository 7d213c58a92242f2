"""Push webhooks through a real `lightci serve` over loopback: a build, the size cap, bursts."""

from __future__ import annotations

from tests.forges import (
    SHA2,
    app_job_fixture,  # noqa: F401 - the app_job fixture
    commit,
    github,
    github_push,
)

# -- through a real `lightci serve` over loopback ------------------------------------------


def big_push(size: int) -> tuple[bytes, dict]:
    """A GitHub push of about `size` bytes: one commit touching very many files."""
    name = "lib/" + "x" * 990 + "/{:08d}.dart"
    files = [name.format(i) for i in range(size // 1012)]  # 1008 characters, quotes, ", "
    push = github_push(after=SHA2, commits=[commit(SHA2, added=files)])
    return github(push | {"head_commit": None})


def test_a_github_push_over_http_becomes_a_finished_build(home, serve, app_job):
    server = serve()
    body, headers = github(github_push())
    answer = server.post("/hooks/app", body, headers=headers)
    assert answer.status == 202, answer
    [build_id] = answer.json()["builds"]
    [row] = home.wait_for([build_id])
    assert row["status"] == "success", home.log(build_id)
    assert "built" in home.log(build_id)
    # Up to the 25 MB default cap works; past it is 413 with a JSON reason, and no row.
    cap = 25 * 1024 * 1024
    body, headers = big_push(cap - 200_000)
    assert cap - 300_000 < len(body) <= cap
    assert server.post("/hooks/app", body, headers=headers).status == 202
    body, headers = big_push(cap + 30_000)
    assert cap < len(body) < cap + 65536
    too_big = server.post("/hooks/app", body, headers=headers)
    assert too_big.status == 413
    assert "cap" in too_big.json()["error"]
    assert len(home.builds()) == 2


def test_copies_of_one_delivery_at_once_make_one_build(home, serve, app_job):
    from concurrent.futures import ThreadPoolExecutor

    server = serve()
    body, headers = github(github_push(), delivery="burst-1")
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: server.post("/hooks/app", body, headers=headers), range(8))
        )
    assert {a.status for a in answers} <= {200, 202}
    assert len({a.json()["builds"][0] for a in answers}) == 1
    assert len(home.builds()) == 1
