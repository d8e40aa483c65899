"""Shared fixtures for the scenario tests: they drive the real metacrypt binary over HTTPS.

The binary and the C example engine are built before the tests run (scripts/test does
`swift build`); these fixtures find them, compile the C engine with `cc`, make TLS material
with the `openssl` command, and start servers on ephemeral loopback ports.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Tests use the cheapest Argon2id cost the server accepts, so that unseal takes milliseconds.
FAST_ARGON2 = {"time": 1, "memory_kib": 8192, "lanes": 1}


def bin_dir() -> Path:
    out = subprocess.run(["swift", "build", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    return Path(out)


@pytest.fixture(scope="session")
def metacrypt_bin() -> Path:
    path = bin_dir() / "metacrypt"
    assert path.exists(), f"{path} is missing: run `swift build` first"
    return path


def build_c_engine(out: Path, *defines: str) -> Path:
    """Compiles Examples/c-engine/kv.c outside SwiftPM, as a third party would."""
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC",
                    "-I", str(ROOT / "Sources/EngineABI/include"), *defines,
                    "-o", str(out), str(ROOT / "Examples/c-engine/kv.c")], check=True)
    os.chmod(out, 0o755)
    return out


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def kv_engine(tmp_path_factory) -> Path:
    return build_c_engine(tmp_path_factory.mktemp("engine") / "libkv.so")


def make_tls(directory: Path, name: str = "server") -> dict:
    """A CA and a server certificate for 127.0.0.1/localhost, made by the openssl command."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / f"{name}-ca.key", directory / f"{name}-ca.pem"
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2", "-subj", f"/CN={name} test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return {"ca": ca_crt, "cert": crt, "key": key}


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class Server:
    """A metacrypt server process started from a config file."""

    def __init__(self, binary: Path, directory: Path, engines=(), limits=None, extra=None, tls=None):
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls or make_tls(self.dir / "tls")
        self.config_path = self.dir / "config.json"
        config = {
            "listen": "127.0.0.1:0",
            "data_dir": str(self.dir / "data"),
            "tls": {"certificate": str(self.tls["cert"]), "key": str(self.tls["key"])},
            "seal": {"argon2": FAST_ARGON2},
            "engines": [{"path": str(p), "sha256": sha256_file(Path(p))} if isinstance(p, (str, Path)) else p
                        for p in engines],
        }
        if limits:
            config["limits"] = limits
        if extra:
            config.update(extra)
        self.config_path.write_text(json.dumps(config))
        self.process = None
        self.port = None
        self.token = None
        self.password = "correct horse battery staple"
        self.stderr_path = self.dir / "stderr.log"

    def start(self):
        # Only lines written by this process count: a restart appends to the same log.
        self.log_offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        self.stderr_file = open(self.stderr_path, "ab")
        self.process = subprocess.Popen([str(self.binary), "server", "--config", str(self.config_path)],
                                        stdout=subprocess.DEVNULL, stderr=self.stderr_file)
        deadline = time.time() + 20
        while time.time() < deadline:
            match = re.findall(r"listening address=https://127\.0\.0\.1:(\d+)", self.stderr()[self.log_offset:])
            if match:
                self.port = int(match[-1])
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError("server did not start:\n" + self.stderr())

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def context(self):
        ctx = ssl.create_default_context(cafile=str(self.tls["ca"]))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    def connection(self):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(), timeout=30)

    def request(self, method, path, body=None, token=None, headers=None, raw=None, conn=None):
        own = conn is None
        conn = conn or self.connection()
        hdrs = dict(headers or {})
        if token is None:
            token = self.token
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            conn.request(method, path, body=payload, headers=hdrs)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            if own:
                conn.close()

    def initialize(self):
        r = self.request("POST", "/v1/sys/init", {"password": self.password, "argon2": FAST_ARGON2}, token="")
        assert r.status == 200, r.body
        self.token = r.json()["admin_token"]
        return self

    def unseal(self):
        r = self.request("POST", "/v1/sys/unseal", {"password": self.password}, token="")
        assert r.status == 200, r.body
        return r

    def mount(self, name, engine_type):
        r = self.request("POST", f"/v1/sys/mounts/{name}", {"type": engine_type})
        assert r.status == 201, r.body
        return r

    def send_signal(self, sig):
        self.process.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "stderr_file", None):
            self.stderr_file.close()
        return self.process.returncode if self.process else None

    def kill(self):
        return self.stop(signal.SIGKILL)


@pytest.fixture
def server_factory(metacrypt_bin, tmp_path):
    servers = []
    counter = iter(range(1000))

    def make(**kwargs):
        s = Server(metacrypt_bin, tmp_path / f"server{next(counter)}", **kwargs)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.kill()


@pytest.fixture
def kv_server(server_factory, kv_engine):
    """An initialised, unsealed server with the C kv engine mounted at `kv`."""
    s = server_factory(engines=[kv_engine]).start().initialize()
    s.mount("kv", "kv")
    return s


@pytest.fixture(scope="session")
def bundled_engine():
    """The path of an engine SwiftPM built, e.g. bundled_engine("Transit") -> .../libTransit.so."""
    directory = bin_dir()

    def find(name: str) -> Path:
        path = directory / f"lib{name}.so"
        assert path.exists(), f"{path} is missing: run `swift build` first"
        return path

    return find


def engine_server(server_factory, engine_path: Path, engine_type: str, mount: str = None, **kwargs):
    """An initialised, unsealed server with one engine loaded and mounted (at its type name by default)."""
    s = server_factory(engines=[engine_path], **kwargs).start().initialize()
    s.mount(mount or engine_type, engine_type)
    return s
