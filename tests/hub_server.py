"""A local fake of the Hugging Face Hub routes huggingface_hub uses to read a model repo.

Routes: GET /api/models/{repo}[/revision/{rev}] (model info with siblings), HEAD/GET
/{repo}/resolve/{rev}/{file} (ETag, X-Repo-Commit, Content-Length, Range). Every request is logged
in `requests`; `drop_next[path] = n` makes the next n GETs of that file send half the body and close.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]]  # commit sha -> files
    refs: dict[str, str]  # branch name -> commit sha

    def commit_of(self, rev: str) -> str | None:
        return self.refs.get(rev, rev if rev in self.commits else None)


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    drop_next: dict[str, int] = field(default_factory=dict)

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, branch: str = "main") -> str:
        """Add a commit holding `files` and point `branch` at it; returns the commit sha."""
        sha = hashlib.sha1(repo_id.encode() + b"".join(k.encode() + files[k] for k in sorted(files))).hexdigest()
        repo = self.repos.setdefault(repo_id, FakeRepo({}, {}))
        repo.commits[sha] = dict(files)
        repo.refs[branch] = sha
        return sha

    def start(self) -> "RunningHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _send(self, status: int, payload: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def _error(self, status: int, message: str, body: bool, code: str) -> None:
                self._send(status, json.dumps({"error": message}).encode(),
                           {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}, body)

            def _serve(self, body: bool) -> None:
                path = self.path.split("?")[0]
                hub.requests.append((self.command, path))
                if m := _INFO.match(path):
                    repo = hub.repos.get(m.group(1))
                    sha = repo.commit_of(m.group(2) or "main") if repo else None
                    if sha is None:
                        return self._error(404, "Repository not found", body, "RepoNotFound")
                    info = {"id": m.group(1), "modelId": m.group(1), "sha": sha, "private": False,
                            "siblings": [{"rfilename": f} for f in sorted(repo.commits[sha])]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
                m = _RESOLVE.match(path)
                repo = hub.repos.get(m.group(1)) if m else None
                if m is None or repo is None:
                    return self._error(404, "Repository not found", body, "RepoNotFound")
                sha = repo.commit_of(m.group(2))
                if sha is None:
                    return self._error(404, "Revision not found", body, "RevisionNotFound")
                data = repo.commits[sha].get(m.group(3))
                if data is None:
                    return self._error(404, "Entry not found", body, "EntryNotFound")
                headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": sha,
                           "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
                status, payload = 200, data
                if rng := re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
                    start = int(rng.group(1))
                    end = int(rng.group(2)) if rng.group(2) else len(data) - 1
                    payload = data[start : end + 1]
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                if body and hub.drop_next.get(path, 0) > 0:
                    hub.drop_next[path] -= 1
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._send(status, payload, headers, body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        return RunningHub(server, thread)


@dataclass
class RunningHub:
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def point_hub_at(monkeypatch: Any, url: str, cache_dir: Path) -> None:
    """Send huggingface_hub to the fake hub at `url`, with its cache in `cache_dir` (online)."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "ENDPOINT", url)
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
