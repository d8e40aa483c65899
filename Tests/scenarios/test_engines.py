"""The engine loader, the storage view engines get, and mounts, seen from outside: real servers, the C
kv engine compiled with cc, and the SQLite file read directly.

Audit findings covered: #48 (an engine cannot reach outside its mount, whatever key it passes) and
the loader's refusals (pin, ABI major, file mode, entry symbol), each named with its reason.
"""
import json
import re
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, build_c_engine, sha256_file

ENTRY_SYMBOL = "metacrypt_engine_v1"


# Helpers

def build_engine_named(out: Path, name: str) -> Path:
    """The kv engine under another type name: a second, distinct engine for multi-engine configs."""
    source = (ROOT / "Examples/c-engine/kv.c").read_text()
    assert source.count('.name = "kv",') == 1, "kv.c no longer declares its name as expected"
    renamed = out.with_suffix(".c")
    renamed.write_text(source.replace('.name = "kv",', f'.name = "{name}",'))
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC",
                    "-I", str(ROOT / "Sources/EngineABI/include"), "-o", str(out), str(renamed)], check=True)
    out.chmod(0o755)
    return out


def build_engine_without_entry(out: Path) -> Path:
    # Without the entry point kv.c's engine table is never referenced; -Werror would refuse that warning.
    return build_c_engine(out, "-DKV_NO_ENTRY", "-Wno-unused-const-variable")


@pytest.fixture(scope="module")
def kvtwo_engine(tmp_path_factory) -> Path:
    return build_engine_named(tmp_path_factory.mktemp("kvtwo") / "libkvtwo.so", "kvtwo")


def data_dir(server) -> Path:
    return Path(json.loads(server.config_path.read_text())["data_dir"])


def db_rows(server, sql, params=()):
    """Reads the server's SQLite file directly, read-only (WAL lets us read while it writes)."""
    db = sqlite3.connect(f"file:{data_dir(server) / 'metacrypt.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def all_entries(server) -> set:
    return set(db_rows(server, "SELECT path, key_id, key_version, value FROM barrier_entries"))


def restarted(server_factory, old, engines):
    """A new server process on the old one's data (the old one must be stopped), sealed."""
    new = server_factory(engines=engines, extra={"data_dir": str(data_dir(old))}, tls=old.tls)
    new.token = old.token
    new.password = old.password
    return new.start()


def wait_for_reencryption(server, key_id, timeout=10):
    deadline = time.time() + timeout
    while True:
        r = server.request("GET", "/v1/sys/keys")
        assert r.status == 200, r.body
        status = {k["key_id"]: k for k in r.json()["keys"]}[key_id]
        if status["entries_on_older_versions"] == 0 and status["versions"] == [status["current_version"]]:
            return status
        assert time.time() < deadline, f"re-encryption of {key_id} did not finish: {status}"
        time.sleep(0.02)


def assert_json_error(r, status, code):
    assert r.status == status, (r.status, r.body)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    error = r.json()["error"]
    assert error["code"] == code, error
    assert error["message"], error
    return error


# 1. Loader refusals

def test_each_refused_engine_is_named_with_its_reason_and_the_good_engine_still_serves(server_factory, tmp_path):
    build = tmp_path / "engines"
    build.mkdir()
    good = build_c_engine(build / "libkv.so")
    wrong_pin = build_c_engine(build / "libkv-wrong-pin.so")
    other_abi = build_c_engine(build / "libkv-abi2.so", "-DKV_ABI_VERSION=0x00020000")
    group_writable = build_c_engine(build / "libkv-group-writable.so")
    group_writable.chmod(0o775)
    no_entry = build_engine_without_entry(build / "libkv-no-entry.so")
    # A well-formed pin of the wrong file.
    pin_of_other_file = sha256_file(other_abi)
    assert pin_of_other_file != sha256_file(wrong_pin)

    # Every kv build reports type "kv" and the first of a type wins, so the good one comes first.
    server = server_factory(engines=[
        good,
        {"path": str(wrong_pin), "sha256": pin_of_other_file},
        other_abi,
        group_writable,
        no_entry,
    ]).start().initialize()

    expected = {
        wrong_pin: [f"SHA-256 {sha256_file(wrong_pin)} does not match the pin {pin_of_other_file}"],
        other_abi: ["built for ABI 2.0", "this host speaks ABI 1."],
        group_writable: ["writable by group or others", "775"],
        no_entry: [f"does not export the entry symbol {ENTRY_SYMBOL}"],
    }
    log = server.stderr()
    r = server.request("GET", "/v1/sys/engines")
    assert r.status == 200, r.body
    answer = r.json()
    refused = {entry["path"]: entry["reason"] for entry in answer["refused"]}
    assert set(refused) == {str(p) for p in expected}, answer
    for path, phrases in expected.items():
        line = next((l for l in log.splitlines() if f"engine {path} refused" in l), None)
        assert line is not None, f"no refusal logged for {path}:\n{log}"
        assert " error " in line, line
        for phrase in phrases:
            assert phrase in line, f"{path}: the log says {line!r}, expected it to mention {phrase!r}"
            assert phrase in refused[str(path)], f"{path}: GET /v1/sys/engines says {refused[str(path)]!r}"

    # The good engine is the one loaded, and it serves.
    assert answer["engines"] == [{"type": "kv", "version": "1.0.0", "path": str(good)}], answer
    server.mount("kv", "kv")
    assert server.request("PUT", "/v1/kv/kv/data/greeting", {"text": "hello"}).status == 204
    r = server.request("GET", "/v1/kv/kv/data/greeting")
    assert (r.status, r.json()) == (200, {"text": "hello"})


def test_an_engine_entry_that_cannot_be_checked_is_refused_and_the_others_load(server_factory, kv_engine, tmp_path):
    missing = tmp_path / "no-such-engine.so"
    pin_not_hex = tmp_path / "libkv-pin-not-hex.so"
    pin_too_short = tmp_path / "libkv-pin-too-short.so"
    build_c_engine(pin_not_hex)
    build_c_engine(pin_too_short)

    server = server_factory(engines=[
        {"path": str(missing), "sha256": "0" * 64},
        {"path": str(pin_not_hex), "sha256": "g" * 64},
        {"path": str(pin_too_short), "sha256": sha256_file(pin_too_short)[:63]},
        kv_engine,
    ]).start().initialize()

    expected = {
        missing: ["cannot open", "No such file or directory"],
        pin_not_hex: ["the configured sha256 pin is not 64 hex digits"],
        pin_too_short: ["the configured sha256 pin is not 64 hex digits"],
    }
    log = server.stderr()
    answer = server.request("GET", "/v1/sys/engines").json()
    refused = {entry["path"]: entry["reason"] for entry in answer["refused"]}
    assert set(refused) == {str(p) for p in expected}, answer
    for path, phrases in expected.items():
        line = next((l for l in log.splitlines() if f"engine {path} refused" in l), "")
        for phrase in phrases:
            assert phrase in line, f"{path}: the log says {line!r}, expected {phrase!r}\n{log}"
            assert phrase in refused[str(path)], refused[str(path)]

    # The engine listed after them loaded and serves.
    assert [e["path"] for e in answer["engines"]] == [str(kv_engine)], answer
    server.mount("kv", "kv")
    assert server.request("PUT", "/v1/kv/kv/data/a", {"n": 1}).status == 204
    assert server.request("GET", "/v1/kv/kv/data/a").json() == {"n": 1}


def test_two_engines_in_one_config_each_load_their_own_shared_object(server_factory, kv_engine, kvtwo_engine):
    server = server_factory(engines=[kv_engine, kvtwo_engine]).start().initialize()

    r = server.request("GET", "/v1/sys/engines")
    assert r.status == 200, r.body
    answer = r.json()
    assert answer["refused"] == [], f"{answer}\n{server.stderr()}"
    assert {e["type"]: e["path"] for e in answer["engines"]} == {"kv": str(kv_engine), "kvtwo": str(kvtwo_engine)}

    # Each mount is served by its own engine, with its own storage.
    server.mount("one", "kv")
    server.mount("two", "kvtwo")
    assert server.request("PUT", "/v1/kv/one/data/x", {"from": "one"}).status == 204
    assert server.request("PUT", "/v1/kvtwo/two/data/x", {"from": "two"}).status == 204
    assert server.request("GET", "/v1/kv/one/data/x").json() == {"from": "one"}
    assert server.request("GET", "/v1/kvtwo/two/data/x").json() == {"from": "two"}


# 2. Storage key confinement (audit #48)

REFUSED_KEYS = {
    "parent segment": b"../x",
    "absolute": b"/x",
    "empty segment": b"a//b",
    "trailing slash": b"a/",
    "dot": b".",
    "parent segment in the middle": b"a/../b",
    "NUL byte": b"a\x00b",
    "513 bytes": b"k" * 513,
    "space": b"a b",
    "non-ASCII": "clé".encode(),
    "empty": b"",
}


def test_the_host_refuses_storage_keys_that_could_leave_the_mount_and_stores_nothing(kv_server):
    before = all_entries(kv_server)

    for what, key in REFUSED_KEYS.items():
        r = kv_server.request("POST", "/v1/kv/kv/raw", raw=key)
        try:
            assert_json_error(r, 400, "invalid_request")
        except AssertionError as error:
            raise AssertionError(f"storage key {key[:40]!r} ({what}): {error}") from None

    # Not one row was written by those requests, inside or outside the mount.
    assert all_entries(kv_server) == before
    paths = db_rows(kv_server, "SELECT path FROM barrier_entries WHERE key_id = 'mount:kv'")
    assert all(path.startswith("engine/kv/kv/") for (path,) in paths), paths


def test_a_valid_nested_storage_key_lands_inside_the_mount(kv_server):
    longest = b"k" * 512  # MC_STORAGE_KEY_MAX

    for key in (b"ok/x", longest):
        r = kv_server.request("POST", "/v1/kv/kv/raw", raw=key)
        assert (r.status, r.json()) == (200, {"stored": True}), (key[:20], r.body)

    rows = db_rows(kv_server, "SELECT path, key_id FROM barrier_entries WHERE key_id = 'mount:kv' ORDER BY path")
    assert rows == [("engine/kv/kv/" + "k" * 512, "mount:kv"), ("engine/kv/kv/ok/x", "mount:kv")]


# 3. The barrier at rest

def test_a_value_written_through_an_engine_is_nowhere_in_plaintext_on_disk(kv_server):
    secret = secrets.token_hex(16)
    marker = f"secret-marker-{secret}"
    assert kv_server.request("PUT", "/v1/kv/kv/data/at-rest", {"marker": marker}).status == 204
    assert kv_server.request("GET", "/v1/kv/kv/data/at-rest").json() == {"marker": marker}
    folder = data_dir(kv_server)

    def on_disk():
        # The database, its WAL and shared-memory files, and anything else the server keeps there.
        return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    # While running: the entry is in the WAL or the main file, sealed.
    files = on_disk()
    assert {"metacrypt.db", "metacrypt.db-wal", "metacrypt.db-shm"} <= set(files), sorted(files)
    # Paths are stored in the clear, so finding this one shows the search reads the right bytes.
    assert any(b"engine/kv/kv/data/at-rest" in content for content in files.values())
    for name, content in files.items():
        assert marker.encode() not in content and secret.encode() not in content, f"the value is in {name}"

    # After a clean stop the WAL is checkpointed into the main file: still sealed there.
    kv_server.stop()
    files = on_disk()
    assert any(b"engine/kv/kv/data/at-rest" in content for content in files.values())
    for name, content in files.items():
        assert marker.encode() not in content and secret.encode() not in content, f"the value is in {name}"


# 4. A mount whose engine is no longer configured

def test_a_mount_whose_engine_is_no_longer_configured_is_reported_and_the_others_still_work(
        server_factory, kv_engine, kvtwo_engine):
    # One engine per start, so this test does not depend on loading two engines at once.
    first = server_factory(engines=[kv_engine]).start().initialize()
    first.mount("kv", "kv")
    assert first.request("PUT", "/v1/kv/kv/data/a", {"v": "kept"}).status == 204
    first.stop()

    second = restarted(server_factory, first, [kvtwo_engine])
    second.unseal()
    second.mount("two", "kvtwo")
    assert second.request("PUT", "/v1/kvtwo/two/data/b", {"v": "engine gone"}).status == 204
    second.stop()

    third = restarted(server_factory, first, [kv_engine])
    third.unseal()

    r = third.request("GET", "/v1/sys/mounts")
    assert r.status == 200, r.body
    answer = r.json()
    assert [m["name"] for m in answer["mounts"]] == ["kv"], answer
    assert set(answer["unavailable"]) == {"two"}, answer
    assert "kvtwo" in answer["unavailable"]["two"] and "not loaded" in answer["unavailable"]["two"], answer
    assert re.search(r"mount not started.*mount\.name=two", third.stderr()), third.stderr()

    # The other mount works, old data and new.
    assert third.request("GET", "/v1/kv/kv/data/a").json() == {"v": "kept"}
    assert third.request("PUT", "/v1/kv/kv/data/c", {"v": "new"}).status == 204
    assert third.request("GET", "/v1/kv/kv/data/c").json() == {"v": "new"}
    # The unavailable mount is not served, and its data and key are kept for when its engine returns.
    assert_json_error(third.request("GET", "/v1/kvtwo/two/data/b"), 404, "not_found")
    assert db_rows(third, "SELECT path FROM barrier_entries WHERE key_id = 'mount:two'") == [
        ("engine/kvtwo/two/data/b",)]
    assert db_rows(third, "SELECT version FROM barrier_keys WHERE key_id = 'mount:two'") == [(1,)]


# 5. Deleting a mount

def test_deleting_a_mount_removes_its_entries_and_every_version_of_its_key(kv_server):
    for name in ("kv2", "kv-2"):  # names that share a prefix with the doomed mount's
        kv_server.mount(name, "kv")
    for name in ("kv", "kv2", "kv-2"):
        for i in range(3):
            assert kv_server.request("PUT", f"/v1/kv/{name}/data/e{i}", {"mount": name, "i": i}).status == 204
    assert kv_server.request("POST", "/v1/kv/kv/raw", raw=b"nested/deeper/key").status == 200
    r = kv_server.request("POST", "/v1/sys/rotate/key/kv")
    assert r.status == 200, r.body
    wait_for_reencryption(kv_server, "mount:kv")
    survivors = {row for row in all_entries(kv_server) if row[1] in ("mount:kv2", "mount:kv-2")}
    assert len(survivors) == 6
    assert db_rows(kv_server, "SELECT count(*) FROM barrier_entries WHERE key_id = 'mount:kv'") == [(4,)]

    r = kv_server.request("DELETE", "/v1/sys/mounts/kv")
    assert (r.status, r.json()) == (200, {"deleted": "kv"}), r.body

    assert db_rows(kv_server, "SELECT path FROM barrier_entries WHERE key_id = 'mount:kv'") == []
    assert db_rows(kv_server, "SELECT path FROM barrier_entries WHERE path LIKE 'engine/kv/kv/%'") == []
    assert db_rows(kv_server, "SELECT path FROM barrier_entries WHERE path = 'sys/mounts/kv'") == []
    assert db_rows(kv_server, "SELECT version FROM barrier_keys WHERE key_id = 'mount:kv'") == []
    # Neighbours untouched, byte for byte, and still served.
    assert {row for row in all_entries(kv_server) if row[1] in ("mount:kv2", "mount:kv-2")} == survivors
    for name in ("kv2", "kv-2"):
        assert kv_server.request("GET", f"/v1/kv/{name}/data/e1").json() == {"mount": name, "i": 1}
    r = kv_server.request("GET", "/v1/sys/mounts")
    assert [m["name"] for m in r.json()["mounts"]] == ["kv-2", "kv2"], r.body
    assert_json_error(kv_server.request("GET", "/v1/kv/kv/data/e0"), 404, "not_found")

    # A new mount of the same name starts empty, with a fresh key.
    kv_server.mount("kv", "kv")
    assert kv_server.request("GET", "/v1/kv/kv/data").json() == {"keys": []}
    assert_json_error(kv_server.request("GET", "/v1/kv/kv/data/e0"), 404, "not_found")
    assert db_rows(kv_server, "SELECT version FROM barrier_keys WHERE key_id = 'mount:kv'") == [(1,)]
