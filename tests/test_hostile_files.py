"""Files a build controls, read and written by lightci with the host's rights.

A build writes its workspace, $LIGHTCI_ARTIFACTS and its cache; the worker then
copies artifacts, the server reads them, the engine mounts the caches, and the
image builds read the workspace. A symlink planted in any of them must not lead
lightci out of the build's directories. Credentials in a job's repo URL must not
reach the log, the build's error or git's argv.
"""

from __future__ import annotations

import base64
import http.server
import smtplib
import threading
import urllib.error
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pytest

from lightci.errors import UserError


def test_collecting_artifacts_never_follows_a_symlink_the_build_planted(home, tmp_path):
    """The audit's escape: ln -s <lightci home> $LIGHTCI_ARTIFACTS/x, then artifacts = ["x/**"]
    made the worker write x/lightci.toml through it (sandbox "none" next build: secrets)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    home.job(
        "evil",
        'artifacts = ["x/**", "y.txt", "ok/*.txt"]\n',
        build=f"""
        mkdir -p x ok
        echo 'sandbox = "none"' > x/lightci.toml
        echo planted > y.txt
        echo fine > ok/a.txt
        ln -s {outside} "$LIGHTCI_ARTIFACTS/x"
        ln -s {outside}/y-target "$LIGHTCI_ARTIFACTS/y.txt"
        """,
    )
    home.start_worker()
    build_id = home.trigger("evil")
    assert home.wait_for([build_id])[0]["status"] == "success"
    assert list(outside.iterdir()) == [], "the worker wrote through a planted symlink"
    log = home.log(build_id)
    assert "artifact x/lightci.toml skipped" in log and "kept 2 artifact(s)" in log
    kept = home.path / "builds" / "evil" / "1" / "artifacts"
    assert (kept / "ok" / "a.txt").read_text() == "fine\n"
    # A link where a file goes is replaced by a new file, never written through.
    assert not (kept / "y.txt").is_symlink() and (kept / "y.txt").read_text() == "planted\n"


def test_an_artifact_is_served_from_one_open_that_follows_no_symlink(bound, tmp_path):
    """A running build swapped artifacts/x between a file and a link to secrets.env while it
    downloaded x: the check and the open were two lookups. Now there is one, O_NOFOLLOW."""
    from lightci import artifacts
    from lightci.config import settings

    cfg = settings()
    build = SimpleNamespace(id=7, job="app", number=1)
    root = cfg.home / "builds" / "app" / "1" / "artifacts"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_text("mine")
    (cfg.home / "secrets.env").write_text("KEY=s3cret\n")
    (root / "link").symlink_to(cfg.home / "secrets.env")
    (root / "dlink").symlink_to(cfg.home)
    with artifacts.open_artifact(cfg, build, "d/f.txt") as f:
        assert f.read() == b"mine"
    for rel in ("link", "dlink/secrets.env", "d", "d/../link", "nope"):
        with pytest.raises(UserError) as refused:
            artifacts.open_artifact(cfg, build, rel)
        assert refused.value.status == 404, rel
    assert artifacts.listing(cfg, build) == [{"path": "d/f.txt", "size": 4}]


@pytest.mark.parametrize("swap", ["symlink", "another file"])
def test_an_artifact_swapped_between_the_look_and_the_open_is_not_served(bound, monkeypatch, swap):
    """What a running build can do while it downloads its own artifact: swap the name."""
    from lightci import artifacts
    from lightci.config import settings

    cfg = settings()
    build = SimpleNamespace(id=7, job="app", number=1)
    root = cfg.home / "builds" / "app" / "1" / "artifacts"
    root.mkdir(parents=True)
    (root / "x").write_text("mine")
    (cfg.home / "secrets.env").write_text("KEY=s3cret\n")
    opening = artifacts._no_link

    def swapped_first(open_it):
        (root / "x").unlink()
        if swap == "symlink":
            (root / "x").symlink_to(cfg.home / "secrets.env")
        else:
            (root / "x").hardlink_to(cfg.home / "secrets.env")
        return opening(open_it)

    monkeypatch.setattr(artifacts, "_no_link", swapped_first)
    with pytest.raises(UserError) as refused:
        artifacts.open_artifact(cfg, build, "x")
    assert refused.value.status == 404


def test_a_docker_cache_made_a_symlink_by_a_stage_is_a_directory_again(tmp_path):
    """ln -s / "$LIGHTCI_CACHE/npm" in one stage had the engine mount the host's / next."""
    from lightci.container import cache_mounts

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "npm").symlink_to("/")
    (cache / "cargo").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    (cache / "pip").write_text("not a dir")
    job = SimpleNamespace(docker={"caches": ["npm", "cargo", "pip"]})
    mounts = cache_mounts(job, SimpleNamespace(cache=cache))
    wanted = [cache / "npm", cache / "cargo" / "registry", cache / "pip"]
    assert set(mounts) == {str(p) for p in wanted}
    for source in mounts:
        assert not any(p.is_symlink() for p in [*Path(source).parents, Path(source)])
        assert Path(source).is_dir()
    assert not (tmp_path / "elsewhere" / "registry").exists()


def test_an_image_s_context_or_dockerfile_may_not_lead_out_of_the_workspace(tmp_path):
    """docker-py archives a symlinked context's target, and sends a Dockerfile from anywhere."""
    from lightci.images import _inside

    workspace = tmp_path / "ws"
    (workspace / "core").mkdir(parents=True)
    (workspace / "core" / "Dockerfile").write_text("FROM scratch\n")
    (workspace / "out").symlink_to(tmp_path)
    (workspace / "Dockerfile.evil").symlink_to("/etc/passwd")
    assert _inside(workspace, "core", "context") == (workspace / "core").resolve()
    assert _inside(workspace, "core/Dockerfile", "dockerfile").is_file()
    for rel in ("out", "Dockerfile.evil", "../x", "out/outside"):
        with pytest.raises(UserError, match="leads out of the workspace"):
            _inside(workspace, rel, "context")


def test_a_delivery_s_answer_never_shows_the_hook_s_path_or_an_address():
    """A chat server's 404 echoed the webhook's secret path; an SMTP refusal named the address."""
    from lightci.sender import _words

    url = "http://127.0.0.1:9/hooks/T0001/B0002/SeCrEtHoOkPaTh0123?token=q1w2e3"
    said = BytesIO(b"Cannot POST /hooks/T0001/B0002/SeCrEtHoOkPaTh0123?token=q1w2e3")
    echoed = urllib.error.HTTPError(url, 404, "Not Found", {}, said)
    text = _words(echoed, {"url": url})
    assert text.startswith("HTTP 404: Cannot POST") and "SeCrEt" not in text and "q1w2" not in text
    refused = smtplib.SMTPRecipientsRefused({"cto-private@corp.example": (550, b"no such user")})
    text = _words(refused, {"to": ["cto-private@corp.example"]})
    assert "SMTPRecipientsRefused" in text and "cto-private" not in text
    other = smtplib.SMTPDataError(554, b"rejected: mail from ops+ci@corp.example refused")
    assert "corp.example" not in _words(other, {"to": ["team@corp.example"]})


def test_credentials_in_a_repo_url_reach_the_server_but_not_the_log_or_git_s_argv(home):
    """repo = "https://bot:TOKEN@host/..." was written to the log as is, and was in `ps`."""
    seen: list[dict] = []

    class Forge(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
            self.send_response(403)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "ghp_REPOTOKEN0123456789"
    repo = f"http://ci-bot:{token}@127.0.0.1:{server.server_port}/org/app.git"
    home.job("private", f'repo = "{repo}"\n', build="echo never\n")
    home.start_worker()
    try:
        build_id = home.trigger("private")
        row = home.wait_for([build_id])[0]
    finally:
        server.shutdown()
    assert row["status"] == "failed" and row["stage"] == "checkout"
    log = home.log(build_id)
    assert token not in log and token not in row["error"], log
    assert f"http://127.0.0.1:{server.server_port}/org/app.git" in log
    assert seen and seen[0]["path"].startswith("/org/app.git/info/refs")
    assert seen[0]["auth"] == "Basic " + base64.b64encode(f"ci-bot:{token}".encode()).decode()


def test_a_mistyped_webhook_secret_is_not_repeated_in_the_error(home):
    """The error of a job.toml shows on the public dashboard and in /api/jobs."""
    home.job("typo", "webhook_secret = 8675309123456789012\n", build="true\n")
    done = home.cli("jobs", check=False)
    assert "webhook_secret" in done.stdout + done.stderr
    assert "8675309123456789012" not in done.stdout + done.stderr
