"""A fake Hugging Face Hub on 127.0.0.1 for download tests, with switchable faults.

``HEAD/GET /{org}/{name}/resolve/{revision}/{file}`` answers like the Hub: ``X-Repo-Commit``,
``ETag`` (git blob SHA-1 for small files), and for large ("LFS") files a 302 to a second
server on another port (the "CDN") with ``X-Linked-Etag`` (SHA-256) and ``X-Linked-Size``.
Bodies honour ``Range: bytes=N-`` with 206. Per file, a ``Fault`` can answer an HTTP status,
drop the connection after N body bytes, stall, or corrupt a byte, each a given number of times.
Every request is logged with the body bytes actually sent.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

FOREVER = 10**9


@dataclass
class Fault:
    status: int | None = None
    status_times: int = FOREVER
    drop_after: int | None = None
    drop_times: int = 1
    stall_s: float = 0.0
    stall_times: int = FOREVER
    corrupt_times: int = 0


@dataclass
class Served:
    server: str  # "hub" or "cdn"
    method: str
    file: str
    range: str | None
    status: int
    body_bytes: int
    authorization: bool


@dataclass
class HubFile:
    data: bytes
    sha256: str = field(init=False)
    git_sha1: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.git_sha1 = hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


class FakeHub:
    def __init__(self, repo: str, files: dict[str, bytes], *, revision: str = "main",
                 lfs_min: int = 10_000) -> None:
        self.repo, self.revision, self.lfs_min = repo, revision, lfs_min
        self.commit = hashlib.sha1(repo.encode()).hexdigest()
        self.files = {name: HubFile(data) for name, data in files.items()}
        self.faults: dict[str, Fault] = {}
        self.log: list[Served] = []
        self.lock = threading.Lock()
        self._servers = [self._server("hub"), self._server("cdn")]
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def _server(self, role: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub, Handler.role = hub, role
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def start(self) -> "FakeHub":
        for server in self._servers:
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what happened ---------------------------------------------------------------------------
    def served(self, file: str | None = None, method: str | None = None) -> list[Served]:
        with self.lock:
            return [s for s in self.log if (file is None or s.file == file) and (method is None or s.method == method)]

    def body_bytes(self, file: str) -> int:
        return sum(s.body_bytes for s in self.served(file, "GET"))

    def take(self, file: str, kind: str) -> bool:
        """Consume one occurrence of a fault of ``kind`` for ``file``."""
        with self.lock:
            fault = self.faults.get(file)
            if fault is None:
                return False
            times = getattr(fault, f"{kind}_times")
            active = times > 0 and (kind != "status" or fault.status is not None) and \
                (kind != "drop" or fault.drop_after is not None) and (kind != "stall" or fault.stall_s > 0)
            if active:
                setattr(fault, f"{kind}_times", times - 1)
            return active


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub
    role: str

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    # -- routing ---------------------------------------------------------------------------------
    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if self.role == "cdn":
            sha = path.rsplit("/", 1)[-1]
            match = [(n, f) for n, f in self.hub.files.items() if f.sha256 == sha]
            if not match:
                return self._error(404, "", "EntryNotFound", body)
            name, f = match[0]
            return self._content(name, f, body, etag=f.sha256)
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "", "RepoNotFound", body)
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo != self.hub.repo:
            return self._error(404, name, "RepoNotFound", body)
        if revision not in (self.hub.revision, self.hub.commit):
            return self._error(404, name, "RevisionNotFound", body)
        f = self.hub.files.get(name)
        if f is None:
            return self._error(404, name, "EntryNotFound", body)
        if self.hub.take(name, "status"):
            code = self.hub.faults[name].status or 500
            return self._error(code, name, "EntryNotFound" if code == 404 else None, body)
        if len(f.data) >= self.hub.lfs_min:
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn_url}/blobs/{f.sha256}")
            self.send_header("X-Repo-Commit", self.hub.commit)
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(len(f.data)))
            self.send_header("ETag", f'"{f.git_sha1}"')
            self.send_header("Content-Length", "0")
            self._log(name, 302, 0)
            return self.end_headers()
        return self._content(name, f, body, etag=f.git_sha1)

    def _log(self, name: str, status: int, sent: int) -> None:
        with self.hub.lock:
            self.hub.log.append(Served(self.role, self.command, name, self.headers.get("Range"), status, sent,
                                       "authorization" in {k.lower() for k in self.headers.keys()}))

    def _error(self, code: int, name: str, error_code: str | None, body: bool) -> None:
        payload = json.dumps({"error": f"{error_code or 'Error'} {code}"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Repo-Commit", self.hub.commit)
        if error_code:
            self.send_header("X-Error-Code", error_code)
        self.send_header("Content-Length", str(len(payload)))
        self._log(name, code, 0)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _content(self, name: str, f: "HubFile", body: bool, etag: str) -> None:
        if body and self.hub.take(name, "stall"):
            self._log(name, 0, 0)
            time.sleep(self.hub.faults[name].stall_s)
            self.close_connection = True
            return None
        data, start = f.data, 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        if start >= len(data) and data:
            return self._error(416, name, None, body)
        status = 206 if start else 200
        self.send_response(status)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", self.hub.commit)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if not body:
            self._log(name, status, 0)
            return self.end_headers()
        chunk = bytearray(data[start:])
        if self.hub.take(name, "corrupt") and chunk:
            chunk[len(chunk) // 2] ^= 0xFF
        if self.hub.take(name, "drop"):
            cut = max(0, self.hub.faults[name].drop_after - start)
            chunk = chunk[:cut]
            self.close_connection = True
        self._log(name, status, len(chunk))  # before the client can see the response
        try:
            self.end_headers()
            self.wfile.write(chunk)
            self.wfile.flush()
        except OSError:
            pass


def make_weight_files(seed: int = 0) -> dict[str, bytes]:
    """The six published files in miniature (a few hundred kB, structurally valid, no torch)."""
    import io
    import pickle
    import zipfile

    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)

    def st(rows: int) -> bytes:
        return save({"embed.weight": rng.standard_normal((rows, 64), dtype=np.float32),
                     "norm.weight": np.ones(64, dtype=np.float32)})

    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("decoder_weights/data.pkl", pickle.dumps({"decoder.weight": "storage 0"}))
        z.writestr("decoder_weights/data/0", rng.bytes(120_000))
        z.writestr("decoder_weights/version", "3\n")
    args = {"hidden_size": 64, "num_layers": 1, "normalization": "RMSNorm"}
    return {
        "khala_backbone.safetensors": st(1000),
        "backbone_megatron_args.json": json.dumps(args).encode(),
        "khala_superres.safetensors": st(1200),
        "superres_megatron_args.json": json.dumps({**args, "vocab_size": 193792}).encode(),
        "decoder_weights.pt": zbuf.getvalue(),
        "decoder_config.yaml": b"encoder:\n  input_channel: 2\nquantizer:\n  num_quantizers: 64\n",
    }
