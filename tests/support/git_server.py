"""A Git server on loopback for GitOps tests: Git's own `git http-backend` (the smart HTTP
protocol, as Git hosting serves it) run as a CGI program behind a small threaded HTTP
server, so that Flux's source-controller clones over `http://127.0.0.1:PORT/NAME`.

Repositories are ordinary working trees under `root`: a test commits into them with
`GitRepo.commit` and the next fetch sees the commit. Serving is read-only (no pushes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

GIT: Final = shutil.which("git") or "/usr/bin/git"
COMMITTER: Final = {
    "GIT_AUTHOR_NAME": "Wardgate tests",
    "GIT_AUTHOR_EMAIL": "tests@wardgate.invalid",
    "GIT_COMMITTER_NAME": "Wardgate tests",
    "GIT_COMMITTER_EMAIL": "tests@wardgate.invalid",
}
# Request headers passed to the CGI program as HTTP_* variables (git reads Git-Protocol
# for protocol v2).
_FORWARDED: Final = ("Git-Protocol", "Accept", "User-Agent")


def _git(repo: Path, *args: str, input: bytes | None = None) -> str:
    result = subprocess.run(
        [GIT, "-C", str(repo), *args],
        input=input,
        capture_output=True,
        env={**_clean_environ(), **COMMITTER},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode()


def _clean_environ() -> dict[str, str]:
    """The environment without the user's Git configuration and repository variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CONFIG_GLOBAL"] = os.devnull
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


@dataclass(frozen=True)
class GitRepo:
    """A working tree served by the server, on branch `main`."""

    path: Path
    url: str

    def commit(self, message: str, files: Mapping[str, str | None]) -> str:
        """Write (or, for None, delete) the files, commit them all, and return the commit's
        hash."""
        for name, text in files.items():
            target = self.path / name
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        _git(self.path, "add", "--all")
        _git(self.path, "commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def revert(self, commit: str) -> str:
        """Commit the revert of `commit`; return the new head."""
        _git(self.path, "revert", "--no-edit", commit)
        return self.head()

    def head(self) -> str:
        return _git(self.path, "rev-parse", "HEAD").strip()


class _CgiHandler(BaseHTTPRequestHandler):
    server: _GitHttpServer

    def do_GET(self) -> None:
        self._run_backend()

    def do_POST(self) -> None:
        self._run_backend()

    def _run_backend(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            **_clean_environ(),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": self.client_address[0],
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        for name in _FORWARDED:
            if self.headers.get(name):
                env["HTTP_" + name.upper().replace("-", "_")] = self.headers[name]
        result = subprocess.run(
            [GIT, "http-backend"], input=body, capture_output=True, env=env, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        if result.returncode != 0 and not head:
            status, payload = 500, result.stderr
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(format % args)


class _GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _CgiHandler)
        self.root = root
        self.requests: list[str] = []


@dataclass
class GitServer:
    """The running server: `repository()` makes a served repository."""

    root: Path
    _server: _GitHttpServer

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[str]:
        """The request lines served so far."""
        return list(self._server.requests)

    def repository(self, name: str, files: Mapping[str, str]) -> GitRepo:
        """A new repository `name` on branch main whose first commit holds `files`."""
        path = self.root / name
        path.mkdir(parents=True)
        _git(path, "init", "--quiet", "--initial-branch=main")
        repo = GitRepo(path=path, url=f"{self.url}/{name}")
        repo.commit("initial commit", files)
        return repo


@contextmanager
def git_server(root: Path) -> Iterator[GitServer]:
    """Serve the repositories under `root` over HTTP on loopback until the block ends."""
    server = _GitHttpServer(root)
    thread = threading.Thread(target=server.serve_forever, name="git-server", daemon=True)
    thread.start()
    try:
        yield GitServer(root=root, _server=server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
