"""Scenario tests of the user engine (end-to-end encryption), over HTTPS against the real binary.

Envelopes are checked by an independent reader written from docs/user.md alone (userlib.py, Python's
`cryptography`), and guard audit findings #33-#35 and #61-#67.
"""
import base64
import json
import os
import random
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from conftest import FAST_ARGON2, Server, engine_server
import userlib

FAST_AUTH = {"password_argon2": FAST_ARGON2}
NO_RATE_LIMIT = {"identity": {"rate": 0, "burst": 0}}
UNIFORM = ("invalid_request", "the envelope cannot be opened")
PASSWORD = "a long enough password"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def error_of(response):
    try:
        error = response.json()["error"]
        return error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return None


# METACRYPT_USER_BIN_DIR runs these tests against another build of the server and engine, e.g. one built
# with `swift build --sanitize=thread --scratch-path DIR` (docs/user.md, "Tests"). Every test then also
# requires that no sanitizer report touches the engine's code (Plugins/User, Sources/Envelope). Reports
# entirely inside the host are printed, not failed on: today they all sit in closures run by the host's
# Synchronization.Mutex, whose futex-based lock ThreadSanitizer does not model.
OTHER_BUILD = os.environ.get("METACRYPT_USER_BIN_DIR")
ENGINE_CODE = re.compile(r"Plugins/User/|Sources/Envelope/|libUser\.so")


def sanitizer_reports(stderr: str):
    """(reports touching the engine, reports inside the host only), each report one text block."""
    blocks = [b for b in stderr.split("==================")
              if "WARNING: ThreadSanitizer" in b or "ERROR: AddressSanitizer" in b]
    ours = [b for b in blocks if ENGINE_CODE.search(b)]
    return ours, [b for b in blocks if not ENGINE_CODE.search(b)]


@pytest.fixture
def server(server_factory, bundled_engine, tmp_path):
    extra = {"auth": FAST_AUTH, "rate_limits": NO_RATE_LIMIT}
    if not OTHER_BUILD:
        yield engine_server(server_factory, bundled_engine("User"), "user", extra=extra)
        return
    directory = Path(OTHER_BUILD)
    s = Server(directory / "metacrypt", tmp_path / "other-build", engines=[directory / "libUser.so"], extra=extra)
    try:
        s.start().initialize()
        s.mount("user", "user")
        yield s
        ours, host_only = sanitizer_reports(s.stderr())
        if host_only:
            summaries = sorted({line.strip() for b in host_only for line in b.splitlines() if "SUMMARY" in line})
            print(f"\n{len(host_only)} sanitizer reports inside the host only:", *summaries, sep="\n  ")
        assert not ours, "\n".join(ours)[:30000]
    finally:
        s.kill()


class Users:
    """Accounts, tokens and user-engine calls against one server and mount."""

    def __init__(self, server, mount="user"):
        self.server = server
        self.mount = mount
        self.tokens = {"admin": server.token}

    def path(self, rest):
        return f"/v1/user/{self.mount}/{rest}"

    def account(self, name, roles=("user",)):
        r = self.server.request("POST", f"/v1/sys/accounts/{name}", {"password": PASSWORD, "roles": list(roles)})
        assert r.status == 201, r.body
        r = self.server.request("POST", "/v1/auth/login", {"username": name, "password": PASSWORD}, token="")
        assert r.status == 200, r.body
        self.tokens[name] = r.json()["token"]
        return self.tokens[name]

    def rule(self, rule_id, resources, actions, users=(), roles=("user",), effect="allow", priority=10):
        r = self.server.request("PUT", f"/v1/sys/policy/rules/{rule_id}",
                                {"priority": priority, "effect": effect, "users": list(users), "roles": list(roles),
                                 "resources": resources, "actions": actions})
        assert r.status == 200, r.body

    def allow_everything(self, roles=("user", "guest")):
        self.rule("user-engine-all", [f"user/{self.mount}/**"], ["*"], roles=roles)

    def call(self, method, rest, body=None, as_user="admin", conn=None):
        return self.server.request(method, self.path(rest), body, token=self.tokens[as_user], conn=conn)

    def register(self, username, as_user="admin", **fields):
        body = dict(fields)
        if username is not None:
            body["username"] = username
        r = self.call("POST", "register", body, as_user=as_user)
        assert r.status == 201, r.body
        return r.json()

    def encrypt(self, recipients, plaintext, aad=None, as_user="admin"):
        body = {"recipients": recipients, "plaintext": b64(plaintext)}
        if aad is not None:
            body["aad"] = b64(aad)
        r = self.call("POST", "encrypt", body, as_user=as_user)
        assert r.status == 200, r.body
        return unb64(r.json()["envelope"])

    def decrypt(self, envelope, as_user):
        return self.call("POST", "decrypt", {"envelope": b64(envelope)}, as_user=as_user)


def assert_uniform(response, what):
    assert response.status == 400 and error_of(response) == UNIFORM, (what, response.status, response.body)


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("count", [1, 2, 16])
def test_every_recipient_of_one_two_or_the_default_maximum_of_recipients_decrypts_the_envelope(server, count):
    users = Users(server)
    users.allow_everything()
    names = [f"r{i:02d}" for i in range(count)]
    for i, name in enumerate(names):
        users.account(name)
        # Half engine-held X25519, half P-256: one envelope mixes both stanza kinds.
        users.register(name, as_user=name, algorithm="p256" if i % 2 else "x25519")
    plaintext = os.urandom(1000)
    envelope = users.encrypt(names, plaintext, aad=b"ticket-42")

    parsed = userlib.parse(envelope)
    assert [s.username for s in parsed.stanzas] == names
    assert plaintext not in envelope
    for name in names:
        r = users.decrypt(envelope, name)
        assert r.status == 200, (name, r.body)
        assert unb64(r.json()["plaintext"]) == plaintext and unb64(r.json()["aad"]) == b"ticket-42"


def test_the_maximum_is_configurable_and_one_recipient_over_it_is_refused_audit_34(server):
    users = Users(server)
    names = [f"m{i:02d}" for i in range(17)]
    for name in names:
        users.register(name)

    r = users.call("POST", "encrypt", {"recipients": names, "plaintext": b64(b"x")})
    assert r.status == 400 and "17 recipients exceed this mount's limit of 16" in r.body.decode(), r.body

    r = users.call("POST", "config", {"max_recipients": 17})
    assert r.status == 200 and r.json()["max_recipients"] == 17, r.body
    envelope = users.encrypt(names, b"seventeen")
    assert len(userlib.parse(envelope).stanzas) == 17

    r = users.call("POST", "config", {"max_recipients": 3})
    assert r.status == 200, r.body
    r = users.call("POST", "encrypt", {"recipients": names[:4], "plaintext": b64(b"x")})
    assert r.status == 400 and "4 recipients exceed this mount's limit of 3" in r.body.decode(), r.body
    assert users.call("GET", "config").json()["max_recipients"] == 3
    for bad in (0, 1025, -1):
        r = users.call("POST", "config", {"max_recipients": bad})
        assert r.status == 400 and str(bad) in r.body.decode(), r.body

    # The limit survives a seal and unseal.
    assert server.request("POST", "/v1/sys/seal", {}).status == 200
    server.unseal()
    assert users.call("GET", "config").json()["max_recipients"] == 3


def test_refused_inputs_name_the_offending_value(server):
    users = Users(server)
    users.register("alice")
    cases = [
        ({"recipients": [], "plaintext": b64(b"x")}, "recipients is empty"),
        ({"recipients": ["alice", "alice"], "plaintext": b64(b"x")}, "alice is listed twice"),
        ({"recipients": ["Bad/Name"], "plaintext": b64(b"x")}, "Bad/Name"),
        ({"recipients": ["alice"], "plaintext": "not base64!"}, "plaintext is not canonical"),
        ({"recipients": ["alice"], "plaintext": b64(b"x"), "aad": "?"}, "aad is not canonical"),
        ({"recipients": ["alice"], "plaintext": b64(b"x"), "aad": b64(bytes(4097))}, "aad is 4097 bytes"),
        ({"plaintext": b64(b"x")}, "missing field recipients"),
    ]
    for body, message in cases:
        r = users.call("POST", "encrypt", body)
        assert r.status == 400 and message in r.body.decode(), (body, r.status, r.body)
    r = users.call("POST", "register", {"username": "carol", "algorithm": "rsa"})
    assert r.status == 400 and "algorithm rsa" in r.body.decode(), r.body
    r = users.call("POST", "register", {"username": "carol", "public_key": b64(bytes(31))})
    assert r.status == 400 and "public_key" in r.body.decode(), r.body
    # A P-256 point off the curve is refused (invalid-curve attacks).
    r = users.call("POST", "register", {"username": "carol", "algorithm": "p256",
                                        "public_key": b64(b"\x04" + bytes(63) + b"\x07")})
    assert r.status == 400 and "public_key" in r.body.decode(), r.body
    # An X25519 small-order point would make every shared secret predictable.
    r = users.call("POST", "register", {"username": "carol", "public_key": b64(bytes(32))})
    assert r.status == 400 and "small-order" in r.body.decode(), r.body
    r = users.call("GET", "keys/carol")
    assert r.status == 404 and "carol" in r.body.decode(), r.body
    r = users.call("POST", "register", {"username": "alice"})
    assert r.status == 409 and "alice already has a key" in r.body.decode(), r.body


# ---------------------------------------------------------------------------------------------
# Who can decrypt


def test_a_non_recipient_a_guest_and_a_recipient_whose_key_was_deleted_cannot_decrypt_audit_63(server):
    users = Users(server)
    users.allow_everything()
    for name in ("alice", "bob", "eve"):
        users.account(name)
        users.register(name, as_user=name)
    users.account("gina", roles=("guest",))
    users.register("gina")  # an administrator may provision a guest's key; the guest still cannot use it

    envelope = users.encrypt(["alice", "bob", "gina"], b"for alice, bob and gina", as_user="eve")
    assert users.decrypt(envelope, "alice").status == 200

    assert_uniform(users.decrypt(envelope, "eve"), "a non-recipient")
    r = users.decrypt(envelope, "gina")
    assert r.status == 403 and "guests may not decrypt" in r.body.decode(), r.body
    r = users.call("POST", "re-encrypt", {"envelope": b64(envelope)}, as_user="gina")
    assert r.status == 403 and "guests may not re-encrypt" in r.body.decode(), r.body
    r = users.call("POST", "rotate-key", {}, as_user="gina")
    assert r.status == 403 and "guests may not rotate" in r.body.decode(), r.body
    r = users.call("POST", "register", {}, as_user="gina")
    assert r.status == 403 and "guests may not register" in r.body.decode(), r.body
    # A guest may still encrypt where policy allows it.
    assert users.call("POST", "encrypt", {"recipients": ["alice"], "plaintext": b64(b"hi")}, as_user="gina").status == 200

    r = users.call("DELETE", "keys/bob", as_user="alice")
    assert r.status == 403, r.body
    assert users.call("DELETE", "keys/bob").status == 204
    r = users.decrypt(envelope, "bob")
    assert r.status == 404 and "no key registered for user bob" in r.body.decode(), r.body
    # Registering again gives bob a new version 1, which cannot open what was made for the old one.
    assert users.register("bob", as_user="bob")["version"] == 1
    assert_uniform(users.decrypt(envelope, "bob"), "bob's re-registered key")
    assert users.decrypt(envelope, "alice").status == 200


def test_nothing_is_created_for_an_unknown_recipient_and_only_an_admin_registers_for_others_audit_33(server):
    users = Users(server)
    users.allow_everything()
    users.account("alice")
    users.register("alice", as_user="alice")
    r = users.call("POST", "encrypt", {"recipients": ["alice", "nobody"], "plaintext": b64(b"x")}, as_user="alice")
    assert r.status == 404 and "no key registered for recipient nobody" in r.body.decode(), r.body
    assert users.call("GET", "keys/nobody").status == 404

    r = users.call("POST", "register", {"username": "mallory"}, as_user="alice")
    assert r.status == 403 and "only an administrator" in r.body.decode(), r.body
    r = users.call("POST", "rotate-key", {"username": "alice"}, as_user="admin")
    assert r.status == 200 and r.json()["version"] == 2, r.body
    users.account("bob")
    users.register("bob", as_user="bob")
    r = users.call("POST", "rotate-key", {"username": "alice"}, as_user="bob")
    assert r.status == 403 and "only an administrator" in r.body.decode(), r.body
    assert users.call("GET", "keys/alice").json()["version"] == 2


def test_policy_resources_use_the_mount_name_audit_62(server_factory, bundled_engine):
    server = engine_server(server_factory, bundled_engine("User"), "user", mount="e2e",
                           extra={"auth": FAST_AUTH, "rate_limits": NO_RATE_LIMIT})
    users = Users(server, mount="e2e")
    users.account("alice")
    # A rule for another mount name does not apply; default deny.
    users.rule("other-mount", ["user/user/**", "engine/user/e2e/**"], ["*"])
    r = users.call("POST", "register", {}, as_user="alice")
    assert r.status == 403, r.body
    users.rule("e2e-keys", ["user/e2e/keys"], ["register"])
    assert users.call("POST", "register", {}, as_user="alice").status == 201
    r = users.call("POST", "encrypt", {"recipients": ["alice"], "plaintext": b64(b"x")}, as_user="alice")
    assert r.status == 403, r.body
    users.rule("e2e-envelopes", ["user/e2e/envelopes"], ["encrypt", "decrypt"])
    r = users.call("POST", "encrypt", {"recipients": ["alice"], "plaintext": b64(b"x")}, as_user="alice")
    assert r.status == 200, r.body
    assert users.decrypt(unb64(r.json()["envelope"]), "alice").status == 200
    routes = server.request("GET", "/v1/sys/routes").json()["routes"]
    resources = {r["operation"]: r.get("resource") for r in routes if r["path"].startswith("/v1/user/")}
    assert resources["decrypt"] == "user/e2e/envelopes", resources


# ---------------------------------------------------------------------------------------------
# Client-held keys


@pytest.mark.parametrize("curve", ["x25519", "p256"])
def test_an_independent_decryptor_opens_an_envelope_for_a_key_the_server_never_saw(server, curve):
    users = Users(server)
    users.allow_everything()
    users.account("carol")
    private = x25519.X25519PrivateKey.generate() if curve == "x25519" else ec.generate_private_key(ec.SECP256R1())
    answer = users.register(None, as_user="carol", algorithm=curve, public_key=b64(userlib.raw_public_key(private)))
    assert answer["custody"] == "client" and answer["username"] == "carol" and answer["version"] == 1, answer
    users.account("alice")
    users.register("alice", as_user="alice")

    plaintext = os.urandom(3000)
    envelope = users.encrypt(["alice", "carol"], plaintext, aad=b"context")
    assert userlib.open_envelope(envelope, "carol", private) == (plaintext, b"context")
    # The engine cannot decrypt for carol: it has no private key for her.
    r = users.decrypt(envelope, "carol")
    assert r.status == 400 and "open the envelope locally" in r.body.decode(), r.body
    # Another key, or another name, fails the same way.
    other = x25519.X25519PrivateKey.generate() if curve == "x25519" else ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(userlib.CannotOpen):
        userlib.open_envelope(envelope, "carol", other)
    with pytest.raises(userlib.CannotOpen):
        userlib.open_envelope(envelope, "alice", private)

    # Rotation of a client-held key takes a new public key.
    r = users.call("POST", "rotate-key", {}, as_user="carol")
    assert r.status == 400 and "needs the new public_key" in r.body.decode(), r.body
    newer = x25519.X25519PrivateKey.generate() if curve == "x25519" else ec.generate_private_key(ec.SECP256R1())
    r = users.call("POST", "rotate-key", {"public_key": b64(userlib.raw_public_key(newer))}, as_user="carol")
    assert r.status == 200 and r.json()["version"] == 2, r.body
    # alice (engine custody) re-encrypts for carol's new version; carol's new key opens it, the old does not.
    r = users.call("POST", "re-encrypt", {"envelope": b64(envelope)}, as_user="alice")
    assert r.status == 200, r.body
    again = unb64(r.json()["envelope"])
    assert {s.username: s.key_version for s in userlib.parse(again).stanzas} == {"alice": 1, "carol": 2}
    assert userlib.open_envelope(again, "carol", newer) == (plaintext, b"context")
    with pytest.raises(userlib.CannotOpen):
        userlib.open_envelope(again, "carol", private)


def test_cli_registers_a_client_key_encrypts_decrypts_and_opens_envelopes_offline(server, metacrypt_bin, tmp_path):
    users = Users(server)
    users.allow_everything()
    users.account("carol")
    users.account("dave")

    def cli(*args, user, stdin=b""):
        env = {k: v for k, v in os.environ.items() if not k.startswith("METACRYPT_")}
        env.update(METACRYPT_ADDR=f"https://127.0.0.1:{server.port}", METACRYPT_CACERT=str(server.tls["ca"]),
                   METACRYPT_TOKEN=users.tokens[user])
        return subprocess.run([str(metacrypt_bin), "user", *args], input=stdin, capture_output=True, env=env,
                              timeout=30)

    key_file = tmp_path / "carol.key"
    r = cli("register", "--client-key", str(key_file), user="carol")
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["custody"] == "client"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    key = json.loads(key_file.read_text())
    assert key["format"] == "metacrypt-user-key-v1" and key["username"] == "carol", key
    # The file holds the private key of the public key the server has.
    private = x25519.X25519PrivateKey.from_private_bytes(unb64(key["private_key"]))
    assert b64(userlib.raw_public_key(private)) == users.call("GET", "keys/carol").json()["public_key"]
    # An existing key file is never overwritten.
    assert cli("rotate", "--client-key", str(key_file), user="carol").returncode != 0
    assert json.loads(key_file.read_text()) == key

    assert cli("register", "--algorithm", "p256", user="dave").returncode == 0
    plaintext = bytes(range(256)) * 4  # binary, not UTF-8
    r = cli("encrypt", "--to", "carol,dave", "--aad", "note", user="dave", stdin=plaintext)
    assert r.returncode == 0, r
    envelope_text = r.stdout
    r = cli("decrypt", user="dave", stdin=envelope_text)
    assert r.returncode == 0 and r.stdout == plaintext, r
    r = cli("open-envelope", "--key", str(key_file), user="carol", stdin=envelope_text)
    assert r.returncode == 0 and r.stdout == plaintext, r
    assert userlib.open_envelope(unb64(envelope_text.strip().decode()), "carol", private)[0] == plaintext

    tampered = bytearray(unb64(envelope_text.strip().decode()))
    tampered[-1] ^= 1
    r = cli("open-envelope", "--key", str(key_file), user="carol", stdin=b64(bytes(tampered)).encode())
    assert r.returncode != 0 and b"the envelope cannot be opened" in r.stderr and r.stdout == b"", r

    r = cli("rotate", user="dave")
    assert r.returncode == 0 and json.loads(r.stdout)["version"] == 2, r
    r = cli("re-encrypt", user="dave", stdin=envelope_text)
    assert r.returncode == 0, r
    stanzas = userlib.parse(unb64(r.stdout.strip().decode())).stanzas
    assert {s.username: s.key_version for s in stanzas} == {"carol": 1, "dave": 2}
    r2 = cli("open-envelope", "--key", str(key_file), user="carol", stdin=r.stdout)
    assert r2.returncode == 0 and r2.stdout == plaintext, r2


# ---------------------------------------------------------------------------------------------
# Tampering


def test_flipping_any_byte_of_the_envelope_fails_with_one_uniform_error(server):
    users = Users(server)
    users.register("alice")
    users.register("bob", algorithm="p256")
    carol = x25519.X25519PrivateKey.generate()
    users.register("carol", public_key=b64(userlib.raw_public_key(carol)))
    users.register("admin")
    envelope = users.encrypt(["admin", "bob", "carol"], b"secret" * 5, aad=b"aad!")
    parsed = userlib.parse(envelope)
    regions = {"header": range(0, 12), "aad": range(parsed.aad_offset, parsed.aad_offset + 4),
               "payload": range(len(parsed.header), len(envelope))}
    for s in parsed.stanzas:
        regions[f"{s.username} stanza"] = range(s.start, s.wrapped_offset)
        regions[f"{s.username} wrapped key"] = range(s.wrapped_offset, s.wrapped_offset + userlib.WRAPPED_SIZE)
    assert sum(len(r) for r in regions.values()) == len(envelope)

    assert users.decrypt(envelope, "admin").status == 200
    conn = server.connection()
    try:
        for region, offsets in regions.items():
            for offset in offsets:
                for bit in (0x01, 0x80):
                    tampered = bytearray(envelope)
                    tampered[offset] ^= bit
                    r = users.call("POST", "decrypt", {"envelope": b64(bytes(tampered))}, conn=conn)
                    assert_uniform(r, f"{region} byte {offset} bit {bit:#x}")
                    with pytest.raises(userlib.CannotOpen):
                        userlib.open_envelope(bytes(tampered), "carol", carol)
        # Truncation, extension, bad base64 and another version are the same error.
        for bad in (envelope[:-1], envelope + b"\0", envelope[:11], b"", b"MCUE\x02" + envelope[5:]):
            assert_uniform(users.call("POST", "decrypt", {"envelope": b64(bad)}, conn=conn), "malformed")
        assert_uniform(users.call("POST", "decrypt", {"envelope": "@@@@"}, conn=conn), "not base64")
    finally:
        conn.close()


def test_swapping_wrapped_keys_or_stanzas_between_recipients_fails(server):
    users = Users(server)
    users.register("admin")
    users.register("bob")
    carol = x25519.X25519PrivateKey.generate()
    users.register("carol", public_key=b64(userlib.raw_public_key(carol)))
    envelope = users.encrypt(["admin", "carol"], b"swap me")
    parsed = userlib.parse(envelope)
    a, c = parsed.stanzas
    swapped = bytearray(envelope)
    swapped[a.wrapped_offset:a.wrapped_offset + 60] = c.wrapped
    swapped[c.wrapped_offset:c.wrapped_offset + 60] = a.wrapped
    assert_uniform(users.decrypt(bytes(swapped), "admin"), "swapped wrapped keys")
    with pytest.raises(userlib.CannotOpen):
        userlib.open_envelope(bytes(swapped), "carol", carol)

    # Stanzas in the other order: each stanza intact, but the header differs, so the payload fails.
    reordered = (parsed.header[:a.start] + envelope[c.start:c.wrapped_offset + 60]
                 + envelope[a.start:a.wrapped_offset + 60] + parsed.payload)
    assert len(reordered) == len(envelope)
    assert_uniform(users.decrypt(reordered, "admin"), "reordered stanzas")

    # A stanza lifted into another envelope (same DEK unknown to it) fails too.
    other = users.encrypt(["admin", "carol"], b"other")
    o = userlib.parse(other)
    grafted = bytearray(other)
    grafted[o.stanzas[0].start:o.stanzas[0].wrapped_offset + 60] = envelope[a.start:a.wrapped_offset + 60]
    assert_uniform(users.decrypt(bytes(grafted), "admin"), "grafted stanza")


# ---------------------------------------------------------------------------------------------
# Rotation and re-encryption


def test_envelopes_from_before_a_rotation_still_decrypt_and_re_encrypt_moves_them_to_the_new_version_audit_35(server):
    users = Users(server)
    users.allow_everything()
    users.account("alice")
    users.account("bob")
    users.register("alice", as_user="alice")
    users.register("bob", as_user="bob", algorithm="p256")
    old = users.encrypt(["alice", "bob"], b"before rotation", aad=b"v1")
    assert [s.key_version for s in userlib.parse(old).stanzas] == [1, 1]

    r = users.call("POST", "rotate-key", {}, as_user="alice")
    assert r.status == 200 and r.json()["version"] == 2 and r.json()["versions"] == [1, 2], r.body
    assert users.call("GET", "keys/alice").json()["version"] == 2
    assert unb64(users.decrypt(old, "alice").json()["plaintext"]) == b"before rotation"

    r = users.call("POST", "re-encrypt", {"envelope": b64(old)}, as_user="bob")
    assert r.status == 200, r.body
    assert set(r.json()) == {"envelope"}, r.json()  # no plaintext in the answer
    new = unb64(r.json()["envelope"])
    parsed = userlib.parse(new)
    assert {s.username: s.key_version for s in parsed.stanzas} == {"alice": 2, "bob": 1}
    assert parsed.aad == b"v1"
    assert b"before rotation" not in new
    for name in ("alice", "bob"):
        assert unb64(users.decrypt(new, name).json()["plaintext"]) == b"before rotation"
    # New envelopes use the current version.
    assert [s.key_version for s in userlib.parse(users.encrypt(["alice"], b"x")).stanzas] == [2]
    # A non-recipient cannot re-encrypt.
    users.account("eve")
    users.register("eve", as_user="eve")
    assert_uniform(users.call("POST", "re-encrypt", {"envelope": b64(old)}, as_user="eve"), "non-recipient")

    # Keys and versions survive a seal and unseal.
    assert server.request("POST", "/v1/sys/seal", {}).status == 200
    server.unseal()
    assert unb64(users.decrypt(old, "alice").json()["plaintext"]) == b"before rotation"
    assert unb64(users.decrypt(new, "alice").json()["plaintext"]) == b"before rotation"


def test_every_route_fails_closed_while_sealed_audit_67(server):
    users = Users(server)
    users.register("admin")
    envelope = users.encrypt(["admin"], b"x")
    assert server.request("POST", "/v1/sys/seal", {}).status == 200
    for method, rest, body in [("POST", "register", {"username": "zed"}), ("GET", "keys/admin", None),
                               ("DELETE", "keys/admin", None), ("POST", "rotate-key", {}),
                               ("POST", "encrypt", {"recipients": ["admin"], "plaintext": b64(b"x")}),
                               ("POST", "decrypt", {"envelope": b64(envelope)}),
                               ("POST", "re-encrypt", {"envelope": b64(envelope)}),
                               ("GET", "config", None), ("POST", "config", {"max_recipients": 2})]:
        r = users.call(method, rest, body)
        assert r.status == 503 and b"plaintext" not in r.body, (method, rest, r.status, r.body)
    server.unseal()
    assert users.decrypt(envelope, "admin").status == 200


# ---------------------------------------------------------------------------------------------
# Concurrency (audit #64-#66)


def test_sixteen_threads_encrypting_decrypting_rotating_and_registering_through_a_seal_stay_correct(server):
    """Audit #64-#67: state changed only under the lock, never used after it, fail closed when sealed.

    No crash, no wrong plaintext, every failure a clean JSON error (503 while sealed), and work goes on
    after the unseal with envelopes made before the seal.
    """
    users = Users(server)
    users.allow_everything()
    workers = [f"w{i:02d}" for i in range(16)]
    for name in workers:
        users.account(name)
        users.register(name, as_user=name, algorithm=random.choice(["x25519", "p256"]))

    duration = float(os.environ.get("USER_CONCURRENCY_SECONDS", "20"))
    stop = time.time() + duration
    failures, counts, lock = [], {}, threading.Lock()
    clean_statuses = {200, 201, 204, 503}

    unsealed_at = [float("inf")]

    def note(kind):
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
            if not kind.endswith(":503") and time.time() > unsealed_at[0]:
                counts["after unseal"] = counts.get("after unseal", 0) + 1

    def check(response, what, allowed=clean_statuses):
        """Every answer is a success or a clean JSON error; never a 5xx other than 503 (sealed)."""
        if response.status in (200, 201, 204):
            note(what)
            return True
        if response.status not in allowed or error_of(response) is None:
            with lock:
                failures.append((what, response.status, response.body[:300]))
        else:
            note(f"{what}:{response.status}")
        return False

    def worker(index):
        me = workers[index]
        rng = random.Random(index)
        conn = server.connection()
        mine = []  # (envelope, plaintext) this worker can decrypt
        extra = 0
        try:
            while time.time() < stop:
                op = rng.choice(["encrypt", "encrypt", "decrypt", "decrypt", "rotate", "register", "re-encrypt"])
                try:
                    if op == "encrypt":
                        peers = [me] + rng.sample([w for w in workers if w != me], rng.randint(0, 3))
                        plaintext = os.urandom(rng.randint(0, 200))
                        r = users.call("POST", "encrypt", {"recipients": peers, "plaintext": b64(plaintext)},
                                       as_user=me, conn=conn)
                        if check(r, "encrypt"):
                            mine.append((unb64(r.json()["envelope"]), plaintext))
                            mine = mine[-20:]
                    elif op in ("decrypt", "re-encrypt") and mine:
                        envelope, plaintext = rng.choice(mine)
                        r = users.call("POST", op, {"envelope": b64(envelope)}, as_user=me, conn=conn)
                        if check(r, op):
                            if op == "decrypt" and unb64(r.json()["plaintext"]) != plaintext:
                                with lock:
                                    failures.append(("WRONG PLAINTEXT", me))
                            if op == "re-encrypt":
                                mine.append((unb64(r.json()["envelope"]), plaintext))
                    elif op == "rotate":
                        check(users.call("POST", "rotate-key", {}, as_user=me, conn=conn), "rotate")
                    elif op == "register":
                        extra += 1
                        check(users.call("POST", "register", {"username": f"x{index}-{extra}"}, as_user="admin",
                                         conn=conn), "register")
                except (OSError, ConnectionError) as e:
                    conn.close()
                    conn = server.connection()
                    with lock:
                        failures.append(("connection", repr(e)))
        finally:
            conn.close()

    def sealer():
        time.sleep(duration / 2)
        r = server.request("POST", "/v1/sys/seal", {})
        with lock:
            if r.status != 200:
                failures.append(("seal", r.status, r.body))
        time.sleep(1)
        server.unseal()
        unsealed_at[0] = time.time()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)] + [threading.Thread(target=sealer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not failures, failures[:10]
    assert server.process.poll() is None, server.stderr()[-2000:]
    for kind in ("encrypt", "decrypt", "rotate", "register", "re-encrypt"):
        assert counts.get(kind, 0) > 0, counts
    assert counts.get("encrypt:503", 0) + counts.get("decrypt:503", 0) > 0, counts  # the seal did land mid-run
    assert counts.get("after unseal", 0) > 0, counts  # and work went on after the unseal
    print("counts:", json.dumps(counts, sort_keys=True))
    # Afterwards the engine is whole: every worker still round-trips.
    for name in workers:
        envelope = users.encrypt([name], b"after")
        assert unb64(users.decrypt(envelope, name).json()["plaintext"]) == b"after"
