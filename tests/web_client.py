"""The web face as the tests call it: the Bottle app in this process (WebClient), and a
real `lightci serve` over loopback (Server, http). The fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from tests.helpers import BIN, free_port

if TYPE_CHECKING:
    from tests.conftest import Home


class Answer:
    """One HTTP answer: status, headers (lower-case names), body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, cookies=None):
        self.status, self.headers, self.body = status, headers, body
        self.cookies = cookies or {}

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:300]!r}>"


class WebClient:
    """Calls the Bottle app in this process (a tiny webtest); keeps cookies like a browser."""

    def __init__(self, app):
        self.app = app
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body=b"", headers=None, json_body=None) -> Answer:
        import io
        from urllib.parse import urlsplit

        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        if isinstance(body, str):
            body = body.encode()
        parts = urlsplit(path)
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in (headers or {}).items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            else:
                environ["HTTP_" + key] = value
        if self.cookies and "HTTP_COOKIE" not in environ:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        seen: dict = {}

        def start_response(status, header_list, exc_info=None):
            seen["status"] = int(status.split()[0])
            seen["headers"] = header_list

        chunks = self.app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        got = {}
        for name, value in seen["headers"]:
            if name.lower() == "set-cookie":
                cookie_name, _, rest = value.partition("=")
                cookie_value = rest.split(";", 1)[0].strip('"')
                if "max-age=0" in value.lower() or "expires=thu, 01 jan 1970" in value.lower():
                    self.cookies.pop(cookie_name, None)
                else:
                    self.cookies[cookie_name] = cookie_value
            got[name.lower()] = value
        return Answer(seen["status"], got, data)

    def get(self, path: str, **kw) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> Answer:
        return self.request("POST", path, **kw)


def http(method: str, url: str, body=b"", headers=None, timeout: float = 30) -> Answer:
    """One request over loopback; 4xx and 5xx are answers, not exceptions."""
    import urllib.error
    import urllib.request

    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return Answer(res.status, {k.lower(): v for k, v in res.headers.items()}, res.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


class Server:
    """`lightci serve` on a free loopback port, as a user runs it."""

    def __init__(self, home: Home, env: dict[str, str] | None = None, workers: int = 2, web=False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(home.path / "serve.log", "ab")
        argv = [str(BIN / "lightci"), "serve", "--port", str(self.port), "--workers", str(workers)]
        if web:  # the Procfile's web line alone: builds need a worker of their own
            argv = [str(BIN / "lightci"), "web", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            argv,
            env={**home.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        home.procs.append(self.proc)
        deadline = time.time() + 30
        while True:
            try:
                if http("GET", self.url + "/health", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError((home.path / "serve.log").read_text()[-3000:])
            time.sleep(0.1)

    def get(self, path: str, **kw) -> Answer:
        return http("GET", self.url + path, **kw)

    def post(self, path: str, body=b"", **kw) -> Answer:
        return http("POST", self.url + path, body, **kw)
