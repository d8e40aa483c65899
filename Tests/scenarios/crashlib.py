"""Crash trials: kill a real server with SIGKILL while key rotations are in flight, then check that
nothing was lost.

One trial starts a server on a fresh data folder, writes a known set of entries through the C kv
engine, starts an MEK rotation and a DEK rotation of the kv mount at the same moment (the DEK
rotation schedules a background re-encryption of every entry), and sends SIGKILL after a random
delay. It then restarts the server on the same data, unseals it with the same password (an MEK
rotation keeps the password), and reads every entry back. Every entry must come back byte for byte,
the key status must answer, and the interrupted re-encryption must finish after the restart.

Before the restart, a copy of the database files as the kill left them tells which phase the kill
interrupted: the MEK generation in seal_config and the versions of mount:kv in barrier_keys, with
where its entries are.

Used by test_crash.py (a short run in the test suite) and by bench/crash-trials (long runs).
"""
import http.client
import json
import random
import secrets
import shutil
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from conftest import Server, bin_dir, build_c_engine, make_tls

KEY_ID = "mount:kv"

# Headline phases, from the state the kill left on disk and what the client saw.
BEFORE = "before the rotations"
MID_MEK = "mid-MEK-rotation"
MID_REENCRYPTION = "mid-re-encryption"
BETWEEN = "between the rotations"
AFTER = "after both rotations"
PHASES = (BEFORE, MID_MEK, BETWEEN, MID_REENCRYPTION, AFTER)


@dataclass
class Setup:
    """What every trial shares: the binary, the compiled engine, TLS material and a work folder."""
    binary: Path
    engine: Path
    tls: dict
    workdir: Path


@dataclass
class TrialResult:
    index: int
    delay_ms: float
    phase: str = "unknown"
    mek_state: str = "unknown"
    dek_state: str = "unknown"
    intact: int = 0
    failures: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def prepare(workdir: Path, binary: Path = None, engine: Path = None) -> Setup:
    """Finds the server binary, compiles the kv engine (unless given) and makes TLS material, once."""
    workdir.mkdir(parents=True, exist_ok=True)
    binary = binary or bin_dir() / "metacrypt"
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: run `swift build` first")
    # A private copy, so that a rebuild during a run cannot put two builds on either side of a kill.
    copy = workdir / "metacrypt"
    shutil.copy2(binary, copy)
    binary = copy
    engine = engine or build_c_engine(workdir / "libkv.so")
    return Setup(binary=binary, engine=engine, tls=make_tls(workdir / "tls"), workdir=workdir)


def _server(setup: Setup, folder: Path, data: Path) -> Server:
    return Server(setup.binary, folder, engines=[setup.engine], tls=setup.tls, extra={"data_dir": str(data)})


class _InFlight(threading.Thread):
    """One request on an already connected (TLS done) connection, so it leaves the moment it starts."""

    def __init__(self, server: Server, method: str, path: str, body: dict, go: threading.Barrier):
        super().__init__(daemon=True)
        self.conn = server.connection()
        self.conn.connect()
        self.method, self.path, self.body, self.go = method, path, body, go
        self.headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
        self.sent_at = None
        self.status = None
        self.error = None

    def run(self):
        self.go.wait()
        try:
            self.conn.request(self.method, self.path, body=json.dumps(self.body).encode(), headers=self.headers)
            self.sent_at = time.monotonic()
            response = self.conn.getresponse()
            response.read()
            self.status = response.status
        except (OSError, http.client.HTTPException) as error:
            self.error = error
        finally:
            self.conn.close()


def _state_at_kill(data: Path, copy_to: Path) -> dict:
    """Reads a copy of the database files exactly as the kill left them (the server recovers the
    originals itself at restart)."""
    copy_to.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = data / f"metacrypt.db{suffix}"
        if source.exists():
            shutil.copyfile(source, copy_to / source.name)
    db = sqlite3.connect(copy_to / "metacrypt.db")
    try:
        generation = db.execute("SELECT mek_generation FROM seal_config WHERE id = 1").fetchone()[0]
        versions = sorted(v for (v,) in db.execute("SELECT version FROM barrier_keys WHERE key_id = ?", (KEY_ID,)))
        on_version = dict(db.execute(
            "SELECT key_version, count(*) FROM barrier_entries WHERE key_id = ? GROUP BY key_version", (KEY_ID,)))
    finally:
        db.close()
    return {"mek_generation": generation, "versions": versions, "entries_by_version": on_version}


def _classify(state: dict, mek: _InFlight, killed_at: float) -> tuple:
    """(headline phase, MEK state, DEK state) from the state on disk and what the MEK request saw."""
    mek_committed = state["mek_generation"] >= 2
    if mek_committed:
        mek_state = "committed, reply received" if mek.status == 200 else "committed, reply lost"
    elif mek.sent_at is not None and mek.sent_at <= killed_at:
        mek_state = "in flight, not committed"
    else:
        mek_state = "not sent"

    versions, by_version = state["versions"], state["entries_by_version"]
    on_old = sum(count for version, count in by_version.items() if version < max(versions, default=1))
    on_new = sum(count for version, count in by_version.items() if version == max(versions, default=1))
    if versions == [1]:
        dek_state = "not rotated"
    elif 1 in versions and on_new == 0:
        dek_state = "rotated, re-encryption not committed"
    elif 1 in versions and on_old > 0:
        dek_state = "re-encryption partly committed"
    elif 1 in versions:
        dek_state = "re-encrypted, old version not yet retired"
    else:
        dek_state = "rotated and re-encrypted"

    if mek_state == "in flight, not committed":
        phase = MID_MEK
    elif dek_state in ("rotated, re-encryption not committed", "re-encryption partly committed",
                       "re-encrypted, old version not yet retired"):
        phase = MID_REENCRYPTION
    elif not mek_committed and dek_state == "not rotated":
        phase = BEFORE
    elif mek_committed and dek_state == "rotated and re-encrypted":
        phase = AFTER
    else:
        phase = BETWEEN
    return phase, mek_state, dek_state


def run_trial(setup: Setup, index: int, rng: random.Random, entries: int = 40, max_delay: float = 0.100,
              keep: bool = False) -> TrialResult:
    """One trial; every problem found is a line in the result's failures, naming the trial and entry."""
    folder = setup.workdir / f"trial-{index:04d}"
    shutil.rmtree(folder, ignore_errors=True)
    data = folder / "data"
    result = TrialResult(index=index, delay_ms=rng.uniform(0, max_delay) * 1000)
    fail = lambda text: result.failures.append(f"trial {index}: {text}")
    first = _server(setup, folder / "until-kill", data)
    second = None
    try:
        # A known starting set: fresh data, N entries with distinct random values.
        first.start().initialize()
        first.mount("kv", "kv")
        expected = {}
        conn = first.connection()
        for i in range(entries):
            key = f"k{i}"
            value = json.dumps({"value": secrets.token_hex(16), "trial": index, "entry": i}).encode()
            r = first.request("PUT", f"/v1/kv/kv/data/{key}", raw=value, conn=conn)
            assert r.status == 204, f"trial {index}: writing entry {key} before the kill answered {r.status} {r.body!r}"
            expected[key] = value
        conn.close()

        # Both rotations leave together; SIGKILL follows after a random delay.
        go = threading.Barrier(3)
        mek = _InFlight(first, "POST", "/v1/sys/rotate/mek", {"password": first.password}, go)
        dek = _InFlight(first, "POST", "/v1/sys/rotate/key/kv", {}, go)
        mek.start()
        dek.start()
        go.wait()
        time.sleep(result.delay_ms / 1000)
        killed_at = time.monotonic()
        first.kill()
        mek.join(10)
        dek.join(10)

        # Which phase did the kill interrupt?
        state = _state_at_kill(data, folder / "db-at-kill")
        result.phase, result.mek_state, result.dek_state = _classify(state, mek, killed_at)
        if state["mek_generation"] not in (1, 2):
            fail(f"seal_config has MEK generation {state['mek_generation']} after one rotation from 1")

        # Restart on the same data and unseal with the same password.
        second = _server(setup, folder / "after-restart", data)
        second.token = first.token
        second.start()
        r = second.request("POST", "/v1/sys/unseal", {"password": second.password}, token="")
        if r.status != 200:
            fail(f"unseal after the restart answered {r.status} {r.body!r} (killed {result.phase}, "
                 f"MEK {result.mek_state}, DEK {result.dek_state})\n{second.stderr()[-2000:]}")
            return result

        # Every entry intact, exactly as written.
        conn = second.connection()
        for key, value in expected.items():
            r = second.request("GET", f"/v1/kv/kv/data/{key}", conn=conn)
            if r.status == 200 and r.body == value:
                result.intact += 1
            else:
                fail(f"entry {key} read back as {r.status} {r.body[:300]!r}, expected {value!r} "
                     f"(killed {result.phase}, MEK {result.mek_state}, DEK {result.dek_state})")
        r = second.request("GET", "/v1/kv/kv/data", conn=conn)
        listed = sorted(r.json().get("keys", [])) if r.status == 200 else None
        if listed != sorted(expected):
            fail(f"listing after the restart answered {r.status} {r.body[:300]!r}, expected {len(expected)} keys")

        # The key status answers, and the re-encryption finishes: nothing left on an older version.
        deadline = time.monotonic() + 10
        while True:
            r = second.request("GET", "/v1/sys/keys", conn=conn)
            if r.status != 200:
                fail(f"GET /v1/sys/keys after the restart answered {r.status} {r.body!r}")
                break
            status = {k["key_id"]: k for k in r.json()["keys"]}.get(KEY_ID)
            if status is None:
                fail(f"GET /v1/sys/keys has no {KEY_ID}: {r.body!r}")
                break
            if status["entries_on_older_versions"] == 0 and status["versions"] == [status["current_version"]]:
                break
            if time.monotonic() > deadline:
                fail(f"re-encryption did not finish within 10 s of the restart: {status}")
                break
            time.sleep(0.02)
        conn.close()
    except AssertionError as error:
        fail(str(error))
    finally:
        first.kill()
        if second is not None:
            second.stop()
        if result.ok and not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return result


def summary(results: list) -> str:
    """The headline, then how the kills fell across the phases."""
    failed = [r for r in results if not r.ok]
    lines = [f"crash trials: {len(results)} run, {len(results) - len(failed)} intact, {len(failed)} failed"]
    phases = Counter(r.phase for r in results)
    lines.append("phases at the kill: " + ", ".join(f"{p} {phases.get(p, 0)}" for p in PHASES))
    mek = Counter(r.mek_state for r in results)
    lines.append("MEK rotation: " + ", ".join(f"{k} {v}" for k, v in sorted(mek.items())))
    dek = Counter(r.dek_state for r in results)
    lines.append("DEK rotation: " + ", ".join(f"{k} {v}" for k, v in sorted(dek.items())))
    for r in failed:
        lines.extend(r.failures)
    return "\n".join(lines)
