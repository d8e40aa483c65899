"""Authentication, authorization, audit and rate limits as clients see them (audit #3, #4, #7, #21,
#54, #58, #74): every route's declared access checked from the route table itself, the hash-chained
audit log of a real session and its tamper detection, fail-closed auditing, token buckets and the
unseal back-off, username normalisation, an RFC 7662 identity provider, and the CLI.

Every test drives the real binary over HTTPS; the identity provider is a real HTTPS endpoint started
by the test.
"""
import base64
import collections
import http.server
import json
import os
import re
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

from conftest import FAST_ARGON2, make_tls

FAST_AUTH = {"password_argon2": FAST_ARGON2}


# ---------------------------------------------------------------------------------------------
# Helpers


def error_code(response):
    """The JSON error code of a response, or None if the body is not a JSON error."""
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def create_account(server, name, password, roles):
    r = server.request("POST", f"/v1/sys/accounts/{urllib.parse.quote(name, safe='')}",
                       {"password": password, "roles": roles})
    assert r.status == 201, (name, r.status, r.body)
    return r.json()


def login(server, name, password):
    r = server.request("POST", "/v1/auth/login", {"username": name, "password": password}, token="")
    assert r.status == 200, (name, r.status, r.body)
    return r.json()["token"]


def put_rule(server, rule_id, *, users=(), roles=(), resources, actions, effect="allow", priority=10):
    r = server.request("PUT", f"/v1/sys/policy/rules/{rule_id}",
                       {"priority": priority, "effect": effect, "users": list(users), "roles": list(roles),
                        "resources": list(resources), "actions": list(actions)})
    assert r.status == 200, (rule_id, r.status, r.body)
    return r.json()


def delete_rule(server, rule_id):
    r = server.request("DELETE", f"/v1/sys/policy/rules/{rule_id}")
    assert r.status == 200, (rule_id, r.status, r.body)


def fill(template, value="p1"):
    """A path or resource template with every {parameter} replaced by a sample value."""
    return re.sub(r"\{[^/{}]+\}", value, template)


def parameters_of(template):
    return re.findall(r"\{([^/{}]+)\}", template)


def body_for(method):
    return {} if method in ("POST", "PUT", "PATCH") else None


def initialise(server):
    """POST /v1/sys/init keeping the whole answer (the generated administrator password too)."""
    r = server.request("POST", "/v1/sys/init", {"password": server.password, "argon2": FAST_ARGON2}, token="")
    assert r.status == 200, r.body
    answer = r.json()
    server.token = answer["admin_token"]
    return answer


def audit_verify(metacrypt_bin, *files):
    return subprocess.run([str(metacrypt_bin), "audit", "verify", *map(str, files)],
                          capture_output=True, text=True, timeout=30)


def read_audit(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


# ---------------------------------------------------------------------------------------------
# 1. Every route's declared access, generated from the route table


def test_every_listed_route_enforces_its_declared_access_for_anonymous_guest_and_allowed_callers(kv_server):
    server = kv_server
    listing = server.request("GET", "/v1/sys/routes")
    assert listing.status == 200, listing.body
    routes = listing.json()["routes"]
    # The table is the source of truth; make sure it really holds every kind of route, engine ones too.
    assert {r["access"] for r in routes} == {"public", "token", "authenticated", "admin"}, routes
    assert any(r["path"].startswith("/v1/kv/kv/") and r["access"] == "authenticated" for r in routes), routes
    for r in routes:
        if r["access"] == "authenticated":
            assert r.get("action") and r.get("resource"), f"authenticated route without action/resource: {r}"
            assert set(parameters_of(r["resource"])) <= set(parameters_of(r["path"])), r

    guest_password = "guest-password-1"
    create_account(server, "gina", guest_password, ["guest"])
    guest = login(server, "gina", guest_password)
    problems = []

    def call(route, token, path=None):
        return server.request(route["method"], path or fill(route["path"]), body_for(route["method"]), token=token)

    def check(route, what, response, expected_status=None, forbidden=(), expected_code=None):
        label = f"{route['method']} {route['path']} ({route['access']}) {what}"
        if response.status >= 500:
            problems.append(f"{label}: {response.status} {response.body[:200]!r}")
        elif expected_status is not None and response.status != expected_status:
            problems.append(f"{label}: expected {expected_status}, got {response.status} {response.body[:200]!r}")
        elif response.status in forbidden:
            problems.append(f"{label}: got {response.status} {response.body[:200]!r}")
        elif expected_code is not None and error_code(response) != expected_code:
            problems.append(f"{label}: expected error {expected_code}, got {response.body[:200]!r}")

    def heal(route, what):
        """If a call changed server state it should not have (sealed, unmounted), note it and repair it,
        so that one failure does not hide the verdict on every later route."""
        status = server.request("GET", "/v1/sys/status", token="").json()
        if status["sealed"]:
            problems.append(f"{route['method']} {route['path']} {what}: left the server sealed")
            server.unseal()
        mounts = server.request("GET", "/v1/sys/mounts")
        if mounts.status == 200 and "kv" not in [m["name"] for m in mounts.json()["mounts"]]:
            problems.append(f"{route['method']} {route['path']} {what}: removed the kv mount")
            server.mount("kv", "kv")

    # Without a token: 401 unless public (public routes never answer "unauthenticated" or "forbidden").
    # With a guest's token and no rule: 403 for authenticated and admin routes.
    # Token routes: any valid token, each with its own throwaway token (logout revokes it).
    for route in routes:
        anonymous = call(route, "")
        if route["access"] == "public":
            check(route, "without a token", anonymous, forbidden=())
            if error_code(anonymous) in ("unauthenticated", "permission_denied"):
                problems.append(f"{route['method']} {route['path']} is public but answered {anonymous.body!r}")
        else:
            check(route, "without a token", anonymous, expected_status=401, expected_code="unauthenticated")
        if route["access"] in ("authenticated", "admin"):
            check(route, "as a guest without a rule", call(route, guest), expected_status=403,
                  expected_code="permission_denied")
        if route["access"] == "token":
            throwaway = login(server, "gina", guest_password)
            check(route, "as a guest", call(route, throwaway), forbidden=(401, 403))
        heal(route, "(anonymous or guest)")

    # Policy never opens an admin route: a guest allowed every action on every resource is still refused.
    put_rule(server, "gen-everything", users=["gina"], resources=["**"], actions=["*"], priority=1000)
    for route in routes:
        if route["access"] == "admin":
            check(route, "as a guest allowed everything by policy", call(route, guest), expected_status=403,
                  expected_code="permission_denied")
            heal(route, "(guest allowed everything)")
    delete_rule(server, "gen-everything")

    # An allow rule for exactly the route's action and resource opens an authenticated route, and
    # removing the rule closes it again.
    for route in routes:
        if route["access"] != "authenticated":
            continue
        put_rule(server, "gen-exact", users=["gina"], resources=[fill(route["resource"])], actions=[route["action"]])
        check(route, f"as a guest allowed {route['action']} on {fill(route['resource'])}", call(route, guest),
              forbidden=(401, 403))
        delete_rule(server, "gen-exact")
        check(route, "as a guest after the rule was deleted", call(route, guest), expected_status=403,
              expected_code="permission_denied")
        heal(route, "(guest with an exact rule)")

    # The generic route reaches every engine route with that route's own checks.
    for route in routes:
        segments = route["path"].split("/")  # "", "v1", type, mount, ...
        if route["access"] == "public" or len(segments) < 5 or segments[2] in ("sys", "auth", "engine"):
            continue
        generic = {"mount": segments[3], "operation": route["operation"],
                   "params": {name: "p1" for name in parameters_of(route["path"])}}
        if route["method"] in ("POST", "PUT", "PATCH"):
            generic["body"] = {}
        label = dict(route, path=f"/v1/engine/request -> {route['path']}")
        check(label, "without a token", server.request("POST", "/v1/engine/request", generic, token=""),
              expected_status=401, expected_code="unauthenticated")
        if route["access"] in ("authenticated", "admin"):
            check(label, "as a guest without a rule", server.request("POST", "/v1/engine/request", generic, token=guest),
                  expected_status=403, expected_code="permission_denied")
        heal(label, "(generic route)")

    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# 2. Audit


def test_a_session_is_audited_line_by_line_without_secrets_and_the_chain_verifies(server_factory, kv_engine,
                                                                                    metacrypt_bin, tmp_path):
    server = server_factory(engines=[kv_engine], extra={"auth": FAST_AUTH}).start()
    init = initialise(server)
    admin_token = init["admin_token"]
    carol_password = "carol-password-Zq81"
    wrong_password = "not-carols-password-Xv42"
    marker = "MARKER-plaintext-7f3a9c"
    other_marker = "MARKER-second-value-b5e1"

    create_account(server, "carol", carol_password, ["user"])
    carol = login(server, "carol", carol_password)
    server.mount("kv", "kv")
    put_rule(server, "carol-kv", users=["carol"], resources=["kv/kv/data/*"], actions=["read", "write"])
    assert server.request("PUT", "/v1/kv/kv/data/secret1", {"value": marker}, token=carol).status == 204
    r = server.request("GET", "/v1/kv/kv/data/secret1", token=carol)
    assert r.status == 200 and r.json() == {"value": marker}, r.body
    assert server.request("PUT", "/v1/kv/kv/data/secret2", {"value": other_marker}, token=carol).status == 204
    denied = server.request("DELETE", "/v1/kv/kv/data/secret1", token=carol)
    assert denied.status == 403, denied.body
    bad_login = server.request("POST", "/v1/auth/login", {"username": "carol", "password": wrong_password}, token="")
    assert bad_login.status == 401, bad_login.body

    log_path = server.dir / "data" / "audit.log"
    raw = log_path.read_bytes()
    events = read_audit(log_path)

    # No secret, in any form the request carried it, is in the file.
    secrets = {"unseal password": server.password, "generated admin password": init["admin_password"],
               "admin token": admin_token, "carol's password": carol_password, "wrong password": wrong_password,
               "carol's token": carol, "plaintext marker": marker, "second plaintext marker": other_marker}
    for name, secret in secrets.items():
        for form in {secret, json.dumps(secret)[1:-1], base64.b64encode(secret.encode()).decode()}:
            assert form.encode() not in raw, f"the audit log contains the {name}"
    for token in (admin_token, carol):  # nor the random part of a token on its own
        assert token.split(".", 1)[1].encode() not in raw

    # Every operation of the session is there with its caller, resource and outcome.
    def find(**fields):
        return [e for e in events if all(e.get(k) == v for k, v in fields.items())]

    assert find(type="response", operation="sys.login", caller="carol", status=200), events
    assert find(type="response", operation="sys.login", status=401, error="invalid_credentials"), events
    assert find(type="response", operation="sys.create-account", caller="admin", status=201), events
    assert find(type="response", operation="sys.create-mount", caller="admin", status=201), events
    assert find(type="response", operation="sys.write-policy-rule", caller="admin", status=200), events
    assert find(type="response", operation="kv.write", caller="carol", mount="kv",
                resource="kv/kv/data/secret1", status=204), events
    assert find(type="response", operation="kv.read", caller="carol", mount="kv",
                resource="kv/kv/data/secret1", status=200), events
    assert find(type="response", operation="kv.write", caller="carol", resource="kv/kv/data/secret2", status=204), events
    assert find(type="response", operation="kv.delete", caller="carol", resource="kv/kv/data/secret1",
                status=403, error="permission_denied"), events
    assert all(e["roles"] == ["user"] for e in events if e["caller"] == "carol"), events

    # Lines come in request/response pairs sharing a request id; a request refused before it was
    # performed (401/403) has its outcome line only.
    by_id = collections.defaultdict(list)
    for e in events:
        by_id[e["request_id"]].append(e)
    for request_id, lines in by_id.items():
        types = [e["type"] for e in lines]
        assert types in (["request", "response"], ["response"]), (request_id, lines)
        if types == ["request", "response"]:
            assert lines[0]["operation"] == lines[1]["operation"], lines
            assert lines[0].get("resource") == lines[1].get("resource"), lines
        else:
            assert lines[0]["status"] in (401, 403), lines
    performed = [e for e in events if e["type"] == "response" and e["status"] < 400]
    assert all(len(by_id[e["request_id"]]) == 2 for e in performed), performed
    assert events[0]["prev"] == "0" * 64

    # The chain holds as written.
    ok = audit_verify(metacrypt_bin, log_path)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert f"intact: {len(events)} lines" in ok.stdout, ok.stdout

    # Tampering with a copy breaks the chain exactly where the next line no longer follows.
    lines = raw.decode().splitlines(keepends=True)
    assert len(lines) >= 10, lines
    middle = len(lines) // 2
    carol_line = next(i for i in range(2, len(lines) - 1) if '"caller":"carol"' in lines[i])

    def tampered(name, new_lines):
        path = tmp_path / name
        path.write_text("".join(new_lines))
        result = audit_verify(metacrypt_bin, path)
        return path, result

    edited = list(lines)
    edited[carol_line] = edited[carol_line].replace('"caller":"carol"', '"caller":"admin"')
    assert edited[carol_line] != lines[carol_line]
    path, result = tampered("edited.log", edited)
    assert result.returncode != 0, result.stdout
    assert f"{path}:{carol_line + 2}:" in result.stdout + result.stderr, result.stdout  # 1-based line after it

    deleted = lines[:middle] + lines[middle + 1:]
    path, result = tampered("deleted.log", deleted)
    assert result.returncode != 0, result.stdout
    assert f"{path}:{middle + 1}:" in result.stdout + result.stderr, result.stdout  # the line now in its place

    swapped = list(lines)
    swapped[middle], swapped[middle + 1] = swapped[middle + 1], swapped[middle]
    path, result = tampered("swapped.log", swapped)
    assert result.returncode != 0, result.stdout
    assert f"{path}:{middle + 1}:" in result.stdout + result.stderr, result.stdout

    # The original still verifies: only the copies were touched.
    assert audit_verify(metacrypt_bin, log_path).returncode == 0


def test_a_request_through_the_generic_route_is_audited_as_one_request_line_and_one_outcome_line(
        server_factory, kv_engine):
    server = server_factory(engines=[kv_engine], extra={"auth": FAST_AUTH}).start()
    server.initialize()
    server.mount("kv", "kv")
    create_account(server, "carol", "carol-password-Zq81", ["user"])
    carol = login(server, "carol", "carol-password-Zq81")
    put_rule(server, "carol-kv", users=["carol"], resources=["kv/kv/data/*"], actions=["write"])
    r = server.request("POST", "/v1/engine/request",
                       {"mount": "kv", "operation": "write", "params": {"key": "generic"}, "body": {"n": 1}},
                       token=carol)
    assert r.status == 204, r.body
    request_id = r.headers["x-request-id"]

    lines = [e for e in read_audit(server.dir / "data" / "audit.log") if e["request_id"] == request_id]
    described = [(e["type"], e["operation"], e["caller"], e.get("resource")) for e in lines]
    assert described == [("request", "kv.write", "carol", "kv/kv/data/generic"),
                         ("response", "kv.write", "carol", "kv/kv/data/generic")], described


def test_when_the_audit_file_refuses_writes_requests_fail_with_503_and_nothing_is_performed(server_factory, kv_engine,
                                                                                            metacrypt_bin, tmp_path):
    # The server holds audit.log open with O_APPEND; the immutable attribute makes every write on that
    # open descriptor fail (EPERM), even for root, which permission bits would not.
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    log_path = audit_dir / "audit.log"
    server = server_factory(engines=[kv_engine], extra={"auth": FAST_AUTH, "audit": {"path": str(log_path)}}).start()
    server.initialize()
    server.mount("kv", "kv")
    assert server.request("PUT", "/v1/kv/kv/data/before", {"n": 1}).status == 204
    lines_before = log_path.read_bytes().count(b"\n")

    made_immutable = subprocess.run(["chattr", "+i", str(log_path)], capture_output=True, text=True)
    assert made_immutable.returncode == 0, ("this test needs `chattr +i` (root with CAP_LINUX_IMMUTABLE on "
                                            "ext4/xfs/btrfs) to make the open audit file unwritable",
                                            made_immutable.stderr)
    try:
        write = server.request("PUT", "/v1/kv/kv/data/during", {"n": 2})
        whoami = server.request("GET", "/v1/auth/whoami")
        mount = server.request("POST", "/v1/sys/mounts/other", {"type": "kv"})
        login_attempt = server.request("POST", "/v1/auth/login", {"username": "admin", "password": "whatever-1"},
                                       token="")
    finally:
        subprocess.run(["chattr", "-i", str(log_path)], check=True)
    for r in (write, whoami, mount, login_attempt):
        assert r.status == 503, (r.status, r.body)
        assert error_code(r) == "audit_unavailable", r.body
    assert "audit log write failed; refusing the request" in server.stderr()
    assert log_path.read_bytes().count(b"\n") == lines_before

    # Writable again: the server recovers, and shows that the refused requests did nothing.
    assert server.request("GET", "/v1/kv/kv/data/during").status == 404
    assert server.request("GET", "/v1/sys/mounts/other").status == 404
    assert server.request("GET", "/v1/kv/kv/data/before").json() == {"n": 1}
    result = audit_verify(metacrypt_bin, log_path)
    assert result.returncode == 0, result.stdout


def test_when_the_audit_log_cannot_be_reopened_at_rotation_every_request_fails_with_503_and_none_is_performed(
        server_factory, kv_engine, tmp_path):
    # Rotation renames audit.log and opens a new one. Replacing the audit folder by a plain file makes
    # that reopen fail (ENOTDIR) for any user; the old descriptor keeps writing into the moved folder
    # until the file reaches max_bytes.
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    server = server_factory(engines=[kv_engine], extra={
        "auth": FAST_AUTH, "audit": {"path": str(audit_dir / "audit.log"), "max_bytes": 4096}}).start()
    server.initialize()
    server.mount("kv", "kv")
    audit_dir.rename(tmp_path / "audit-moved")
    audit_dir.write_text("not a folder\n")

    # Each request on a new connection, as independent clients send them.
    outcomes = []
    for i in range(40):
        try:
            r = server.request("PUT", f"/v1/kv/kv/data/k{i}", {"n": i})
            outcomes.append((i, r.status, error_code(r)))
        except (OSError, ssl.SSLError) as e:
            outcomes.append((i, "no HTTP answer", repr(e)))
    first_failure = next((i for i, status, _ in outcomes if status != 204), None)
    assert first_failure is not None, f"rotation never failed: {outcomes}"
    alive = server.process.poll() is None
    crashed = "" if alive else server.stderr()[-2000:]

    # Once the audit log is gone, every request is refused the same way and the server stays up.
    after = outcomes[first_failure:]
    assert all(status == 503 and code == "audit_unavailable" for _, status, code in after), after
    assert alive, crashed

    # None of the refused writes happened (checked after a restart with the folder back).
    server.kill()
    audit_dir.unlink()
    (tmp_path / "audit-moved").rename(audit_dir)
    server.start()
    server.unseal()
    for i, status, _ in outcomes:
        expected = 200 if status == 204 else 404
        assert server.request("GET", f"/v1/kv/kv/data/k{i}").status == expected, (i, status)


# ---------------------------------------------------------------------------------------------
# 3. Rate limits and unseal back-off


def test_a_burst_over_the_identity_limit_gets_429_with_retry_after_while_another_user_is_unaffected(
        server_factory, kv_engine):
    server = server_factory(engines=[kv_engine], extra={
        "auth": FAST_AUTH, "rate_limits": {"identity": {"rate": 1, "burst": 5}}}).start()
    server.initialize()
    server.mount("kv", "kv")
    assert server.request("PUT", "/v1/kv/kv/data/doc", {"n": 1}).status == 204
    for name in ("rita", "sam"):
        create_account(server, name, f"{name}-password-1", ["user"])
    put_rule(server, "readers", users=["rita", "sam"], resources=["kv/kv/data/*"], actions=["read"])
    rita = login(server, "rita", "rita-password-1")
    sam = login(server, "sam", "sam-password-1")

    conn = server.connection()
    started = time.monotonic()
    burst = [server.request("GET", "/v1/kv/kv/data/doc", token=rita, conn=conn) for _ in range(8)]
    others = [server.request("GET", "/v1/kv/kv/data/doc", token=sam) for _ in range(3)]
    elapsed = time.monotonic() - started
    conn.close()

    assert all(r.status in (200, 429) for r in burst), [(r.status, r.body) for r in burst]
    allowed = sum(r.status == 200 for r in burst)
    limited = [r for r in burst if r.status == 429]
    assert 5 <= allowed <= 5 + int(elapsed * 1) + 1, (allowed, elapsed)
    assert limited, f"no 429 in a burst of 8 at rate 1, burst 5 ({elapsed:.2f} s)"
    waits = []
    for r in limited:
        assert error_code(r) == "rate_limited", r.body
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        retry_after = r.headers.get("retry-after")
        assert retry_after is not None and re.fullmatch(r"[0-9]+", retry_after), r.headers
        assert int(retry_after) >= 1, retry_after
        waits.append(int(retry_after))
    # Sam spends his own bucket: Rita's burst does not touch it.
    assert [r.status for r in others] == [200, 200, 200], [(r.status, r.body) for r in others]

    time.sleep(max(waits) + 0.2)
    again = server.request("GET", "/v1/kv/kv/data/doc", token=rita)
    assert again.status == 200 and again.json() == {"n": 1}, again.body


def test_after_four_wrong_unseal_passwords_even_the_right_one_waits_for_retry_after(kv_server):
    server = kv_server
    assert server.request("POST", "/v1/sys/seal").status == 200
    for attempt in range(4):
        r = server.request("POST", "/v1/sys/unseal", {"password": f"wrong password {attempt}"}, token="")
        assert r.status == 400 and error_code(r) == "unseal_failed", (attempt, r.status, r.body)

    refused = server.request("POST", "/v1/sys/unseal", {"password": server.password}, token="")
    assert refused.status == 429, (refused.status, refused.body)
    assert error_code(refused) == "rate_limited", refused.body
    retry_after = refused.headers.get("retry-after")
    assert retry_after is not None and re.fullmatch(r"[0-9]+", retry_after) and int(retry_after) >= 1, refused.headers
    assert server.request("GET", "/v1/sys/status", token="").json()["sealed"] is True

    time.sleep(int(retry_after) + 0.2)
    r = server.request("POST", "/v1/sys/unseal", {"password": server.password}, token="")
    assert r.status == 200 and r.json()["sealed"] is False, r.body
    assert server.request("GET", "/v1/sys/mounts").status == 200


# ---------------------------------------------------------------------------------------------
# 4. Usernames


def test_usernames_fold_ascii_case_into_one_account_and_refuse_look_alikes(server_factory, kv_engine):
    server = server_factory(engines=[kv_engine], extra={"auth": FAST_AUTH}).start()
    server.initialize()
    server.mount("kv", "kv")
    assert server.request("PUT", "/v1/kv/kv/data/doc", {"n": 1}).status == 204

    created = create_account(server, "Alice", "alice-password-1", ["guest"])
    assert created["username"] == "alice", created
    create_account(server, "bob", "bob-password-1", ["user"])

    # Another spelling of an existing name is the same account: refused, and the account is unchanged.
    for spelling in ("alice", "ALICE", "aLiCe"):
        r = server.request("POST", f"/v1/sys/accounts/{spelling}", {"password": "takeover-pass-1", "roles": ["admin"]})
        assert r.status == 409 and error_code(r) == "exists", (spelling, r.status, r.body)
    r = server.request("POST", "/v1/sys/accounts/Admin", {"password": "takeover-pass-1", "roles": ["user"]})
    assert r.status == 409, r.body
    account = server.request("GET", "/v1/sys/accounts/ALICE")
    assert account.status == 200 and account.json()["username"] == "alice" and account.json()["roles"] == ["guest"], \
        account.body

    # Non-ASCII look-alikes and other characters are refused, not transformed.
    for spelling in ("\u0430lice",        # Cyrillic a
                     "\uff41lice",        # fullwidth a
                     "alic\u0435",        # Cyrillic e
                     "\u212aate",         # Kelvin sign, which Unicode lowercases to k
                     "alice\u200b",       # zero-width space
                     "alice ", " alice", "al/ice", "-alice", ""):
        r = server.request("POST", "/v1/sys/accounts/" + urllib.parse.quote(spelling, safe=""),
                           {"password": "lookalike-pass-1", "roles": ["admin"]})
        if spelling in ("", "al/ice"):
            assert r.status in (400, 404, 405), (spelling, r.status, r.body)  # not even a route
        else:
            assert r.status == 400 and error_code(r) == "invalid_request", (spelling, r.status, r.body)
    names = sorted(a["username"] for a in server.request("GET", "/v1/sys/accounts").json()["accounts"])
    assert names == ["admin", "alice", "bob"], names

    # Any ASCII case logs in to the one account; a look-alike does not.
    token = login(server, "ALICE", "alice-password-1")
    who = server.request("GET", "/v1/auth/whoami", token=token).json()
    assert who == {"username": "alice", "roles": ["guest"], "admin": False}, who
    for spelling in ("\u0430lice", "alice ", "Bob", "ADMIN"):
        r = server.request("POST", "/v1/auth/login", {"username": spelling, "password": "alice-password-1"}, token="")
        assert r.status == 401 and error_code(r) == "invalid_credentials", (spelling, r.status, r.body)

    # A rule naming "Alice" is stored normalised and applies to alice, and to nobody else.
    assert server.request("GET", "/v1/kv/kv/data/doc", token=token).status == 403
    rule = put_rule(server, "alice-reads", users=["Alice"], resources=["kv/kv/data/doc"], actions=["read"])
    assert rule["users"] == ["alice"], rule
    assert server.request("GET", "/v1/sys/policy/rules/alice-reads").json()["users"] == ["alice"]
    assert server.request("GET", "/v1/kv/kv/data/doc", token=token).status == 200
    assert server.request("PUT", "/v1/kv/kv/data/doc", {"n": 2}, token=token).status == 403
    bob = login(server, "BOB", "bob-password-1")
    assert server.request("GET", "/v1/auth/whoami", token=bob).json()["username"] == "bob"
    assert server.request("GET", "/v1/kv/kv/data/doc", token=bob).status == 403

    # A rule naming a look-alike is refused, so it can never be read as alice's (or anyone's).
    for spelling in ("\u0430lice", "alice ", "\u212aate"):
        r = server.request("PUT", "/v1/sys/policy/rules/lookalike",
                           {"priority": 100, "effect": "allow", "users": [spelling], "resources": ["**"],
                            "actions": ["*"]})
        assert r.status == 400, (spelling, r.status, r.body)
    assert server.request("GET", "/v1/sys/policy/rules/lookalike").status == 404
    # A deny naming BOB binds bob, not alice.
    put_rule(server, "deny-bob", users=["BOB"], resources=["kv/kv/data/doc"], actions=["read"], effect="deny",
             priority=100)
    assert server.request("GET", "/v1/kv/kv/data/doc", token=token).status == 200
    assert server.request("GET", "/v1/kv/kv/data/doc", token=bob).status == 403
    # No spelling reaches an admin route.
    assert server.request("GET", "/v1/sys/accounts", token=token).status == 403


# ---------------------------------------------------------------------------------------------
# 5. External identity provider (RFC 7662)


class IntrospectionEndpoint:
    """A real RFC 7662 endpoint over HTTPS on 127.0.0.1: checks HTTP Basic client credentials, reads
    token=... from the form body and counts the calls per token."""

    def __init__(self, directory: Path, client_id="metacrypt", client_secret="s3cret"):
        self.tls = make_tls(directory, "idp")
        self.answers = {}
        self.calls = collections.Counter()
        self.bad_credentials = 0
        self.other_problems = []
        expected = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                if self.path != "/introspect":
                    endpoint.other_problems.append(f"path {self.path}")
                    return self.answer(404, {"error": "not_found"})
                if self.headers.get("Authorization") != expected:
                    endpoint.bad_credentials += 1
                    return self.answer(401, {"error": "invalid_client"})
                if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    endpoint.other_problems.append(f"content type {self.headers.get('Content-Type')}")
                token = urllib.parse.parse_qs(body).get("token", [""])[0]
                endpoint.calls[token] += 1
                self.answer(200, endpoint.answers.get(token, {"active": False}))

            def answer(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.tls["cert"]), str(self.tls["key"]))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join(timeout=10)
        self.httpd.server_close()


def test_an_identity_provider_token_authenticates_is_cached_and_fails_closed(server_factory, kv_engine, tmp_path):
    provider = IntrospectionEndpoint(tmp_path / "idp")
    try:
        server = server_factory(engines=[kv_engine], extra={"auth": {
            "password_argon2": FAST_ARGON2,
            "introspection": {"url": f"https://127.0.0.1:{provider.port}/introspect", "ca_file": str(provider.tls["ca"]),
                              "client_id": "metacrypt", "client_secret": "s3cret",
                              "cache_ttl_seconds": 30, "cache_size": 100}}}).start()
        server.initialize()
        server.mount("kv", "kv")
        assert server.request("PUT", "/v1/kv/kv/data/doc", {"n": 1}).status == 204
        provider.answers["idp-token-dana"] = {"active": True, "username": "Dana", "roles": ["user"]}
        provider.answers["idp-token-revoked"] = {"active": False, "username": "eve", "roles": ["admin"]}

        # The provider's token authenticates as the provider's user, with the provider's roles.
        who = server.request("GET", "/v1/auth/whoami", token="idp-token-dana")
        assert who.status == 200, (who.status, who.body)
        assert who.json() == {"username": "dana", "roles": ["user"], "admin": False}, who.body
        # Policy applies to it like to a local account.
        assert server.request("GET", "/v1/kv/kv/data/doc", token="idp-token-dana").status == 403
        put_rule(server, "dana-reads", users=["dana"], resources=["kv/kv/data/doc"], actions=["read"])
        r = server.request("GET", "/v1/kv/kv/data/doc", token="idp-token-dana")
        assert r.status == 200 and r.json() == {"n": 1}, r.body
        assert server.request("PUT", "/v1/kv/kv/data/doc", {"n": 2}, token="idp-token-dana").status == 403
        assert server.request("GET", "/v1/sys/accounts", token="idp-token-dana").status == 403
        # Five uses within the TTL: one introspection call.
        assert provider.calls["idp-token-dana"] == 1, provider.calls

        # Unknown and inactive tokens are refused.
        for token in ("idp-token-unknown", "idp-token-revoked"):
            r = server.request("GET", "/v1/auth/whoami", token=token)
            assert r.status == 401 and error_code(r) == "unauthenticated", (token, r.status, r.body)
            assert provider.calls[token] == 1, provider.calls
        # Local-looking tokens never leave the host.
        r = server.request("GET", "/v1/auth/whoami", token="mct.not-a-real-token")
        assert r.status == 401, r.body
        assert "mct.not-a-real-token" not in provider.calls, provider.calls
        assert provider.bad_credentials == 0 and not provider.other_problems, provider.other_problems

        # A provider that is down refuses new tokens: never a 200, never a 500.
        provider.stop()
        provider.answers["idp-token-late"] = {"active": True, "username": "late", "roles": ["admin"]}
        r = server.request("GET", "/v1/auth/whoami", token="idp-token-late")
        assert r.status in (401, 503), (r.status, r.body, server.stderr()[-1000:])
        r = server.request("GET", "/v1/sys/accounts", token="idp-token-late")
        assert r.status in (401, 503), (r.status, r.body)
    finally:
        provider.stop()


# ---------------------------------------------------------------------------------------------
# 6. CLI


def test_cli_logs_in_reports_whoami_manages_policy_lists_accounts_and_logs_out(server_factory, kv_engine,
                                                                               metacrypt_bin):
    server = server_factory(engines=[kv_engine], extra={"auth": FAST_AUTH}).start()
    server.initialize()
    create_account(server, "dave", "dave-password-1", ["user"])

    def cli(*args, token=None, stdin=""):
        env = {k: v for k, v in os.environ.items() if not k.startswith("METACRYPT_")}
        env.update(METACRYPT_ADDR=f"https://127.0.0.1:{server.port}", METACRYPT_CACERT=str(server.tls["ca"]))
        if token:
            env["METACRYPT_TOKEN"] = token
        return subprocess.run([str(metacrypt_bin), *args], input=stdin, capture_output=True, text=True, env=env,
                              timeout=30)

    wrong = cli("login", "dave", stdin="not-the-password\n")
    assert wrong.returncode != 0 and "invalid_credentials" in wrong.stdout + wrong.stderr, wrong
    logged_in = cli("login", "DAVE", stdin="dave-password-1\n")
    assert logged_in.returncode == 0, logged_in
    answer = json.loads(logged_in.stdout)
    assert answer["username"] == "dave" and answer["token"].startswith("mct."), answer
    dave = answer["token"]

    who = cli("whoami", token=dave)
    assert who.returncode == 0 and json.loads(who.stdout) == {"username": "dave", "roles": ["user"], "admin": False}, who

    # Account listing is for administrators only.
    refused = cli("account", "list", token=dave)
    assert refused.returncode != 0 and "permission_denied" in refused.stdout, refused
    listed = cli("account", "list", token=server.token)
    assert listed.returncode == 0, listed
    assert sorted(a["username"] for a in json.loads(listed.stdout)["accounts"]) == ["admin", "dave"], listed.stdout

    # Policy from standard input, then listed.
    rule = {"priority": 5, "effect": "allow", "users": ["Dave"], "resources": ["kv/kv/data/*"], "actions": ["read"]}
    refused = cli("policy", "write", "dave-reads", "-", token=dave, stdin=json.dumps(rule))
    assert refused.returncode != 0 and "permission_denied" in refused.stdout, refused
    written = cli("policy", "write", "dave-reads", "-", token=server.token, stdin=json.dumps(rule))
    assert written.returncode == 0, written
    assert json.loads(written.stdout)["users"] == ["dave"], written.stdout
    listed = cli("policy", "list", token=server.token)
    assert listed.returncode == 0, listed
    rules = json.loads(listed.stdout)["rules"]
    assert [(r["id"], r["users"], r["actions"]) for r in rules] == [("dave-reads", ["dave"], ["read"])], rules
    bad = cli("policy", "write", "Bad/Id", "-", token=server.token, stdin=json.dumps(rule))
    assert bad.returncode != 0, bad

    # Logout revokes the token it was given, and only that one.
    other = login(server, "dave", "dave-password-1")
    out = cli("logout", token=dave)
    assert out.returncode == 0, out
    after = cli("whoami", token=dave)
    assert after.returncode != 0 and "unauthenticated" in after.stdout, after
    assert cli("whoami", token=other).returncode == 0
    no_token = cli("whoami")
    assert no_token.returncode != 0 and "unauthenticated" in no_token.stdout, no_token
