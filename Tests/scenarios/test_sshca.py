"""The SSH CA engine, checked by OpenSSH itself: ssh-keygen reads the certificates, KRLs and SSHSIG
signatures it writes, and a real sshd on a loopback port enforces them."""
import base64
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import engine_server
from sshcalib import SSHD, cert_listing, keygen, pub, run, write_cert

BASE = "/v1/sshca/ssh"


@pytest.fixture
def server(server_factory, bundled_engine):
    return engine_server(server_factory, bundled_engine("SSHCA"), "sshca", mount="ssh")


def configure(s, **fields):
    r = s.request("POST", f"{BASE}/config", fields)
    assert r.status in (200, 201), r.body
    return r.json()


@pytest.fixture
def ca(server):
    configure(server)
    return server


def sign_user(s, key, token=None, expect=200, **fields):
    r = s.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), **fields}, token=token)
    assert r.status == expect, r.body
    return r.json()


def sign_host(s, key, hostnames, token=None, expect=200, **fields):
    r = s.request("POST", f"{BASE}/sign-host", {"public_key": pub(key), "hostnames": hostnames, **fields}, token=token)
    assert r.status == expect, r.body
    return r.json()


def public(s, name):
    r = s.request("GET", f"{BASE}/{name}", token="")
    assert r.status == 200, r.body
    return r.body


def utc(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def add_user(s, name, *rules):
    """An account with role user and the given (resources, actions) allow rules; returns its token."""
    assert s.request("POST", f"/v1/sys/accounts/{name}", {"password": "a password for tests", "roles": ["user"]}).status == 201
    for i, (resources, actions) in enumerate(rules):
        r = s.request("PUT", f"/v1/sys/policy/rules/{name}-{i}",
                      {"priority": 10, "effect": "allow", "users": [name], "resources": resources, "actions": actions})
        assert r.status in (200, 201, 204), r.body
    r = s.request("POST", "/v1/auth/login", {"username": name, "password": "a password for tests"}, token="")
    assert r.status == 200, r.body
    return r.json()["token"]


@pytest.fixture
def sshd(ca, tmp_path):
    daemon = SSHD(tmp_path / "sshd", public(ca, "ca").decode(), public(ca, "krl")).start()
    yield daemon
    daemon.stop()


# --- certificates as ssh-keygen reads them -------------------------------------------------------------


def test_ssh_keygen_lists_exactly_the_requested_user_certificate(ca, tmp_path):
    r = ca.request("PUT", f"{BASE}/profiles/deploy",
                   {"critical_options": {"force-command": "/usr/bin/deploy --now", "source-address": "10.1.0.0/16, 192.0.2.7"},
                    "extensions": ["permit-pty", "permit-agent-forwarding"]})
    assert r.status == 200, r.body
    key = keygen(tmp_path, "id_ed25519")
    answer = sign_user(ca, key, principals=["root", "deploy"], ttl="2h", profile="deploy", key_id="laptop")
    cert = write_cert(key, answer["signed_key"])
    listing = cert_listing(cert)

    assert listing["Type"] == "ssh-ed25519-cert-v01@openssh.com user certificate"
    assert listing["Key ID"] == f'"{answer["key_id"]}"'
    assert answer["key_id"].startswith("admin:") and answer["key_id"].endswith(":laptop"), "names caller and request"
    assert listing["Serial"] == answer["serial"] and answer["serial"] != "0"
    assert listing["Valid"] == f"from {utc(answer['valid_after'])} to {utc(answer['valid_before'])}"
    assert answer["valid_before"] - answer["valid_after"] == 2 * 3600 + 120, "ttl plus the default 2m backdating"
    assert listing["Principals"] == ["root", "deploy"]
    assert listing["Critical Options"] == ["force-command /usr/bin/deploy --now", "source-address 10.1.0.0/16,192.0.2.7"]
    assert listing["Extensions"] == ["permit-agent-forwarding", "permit-pty"]
    ca_line = public(ca, "ca").decode().split()
    assert listing["Signing CA"].startswith("ED25519 SHA256:")
    fingerprint = run("ssh-keygen", "-l", "-f", "/dev/stdin", input=" ".join(ca_line).encode()).stdout.decode().split()[1]
    assert fingerprint in listing["Signing CA"]


def test_a_user_certificate_without_profile_has_the_default_extensions_and_no_critical_options(ca, tmp_path):
    key = keygen(tmp_path, "k", "ecdsa")
    listing = cert_listing(write_cert(key, sign_user(ca, key)["signed_key"]))
    assert listing["Type"] == "ecdsa-sha2-nistp256-cert-v01@openssh.com user certificate"
    assert listing["Principals"] == ["admin"], "principals default to the caller's own name"
    assert listing["Critical Options"] == []
    assert listing["Extensions"] == ["permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding",
                                     "permit-pty", "permit-user-rc"]


@pytest.mark.parametrize("key_type,name", [("ecdsa-p256", "ECDSA"), ("ecdsa-p384", "ECDSA")])
def test_ecdsa_cas_sign_certificates_ssh_keygen_verifies(server, tmp_path, key_type, name):
    answer = configure(server, key_type=key_type)
    curve = "nistp256" if key_type == "ecdsa-p256" else "nistp384"
    assert answer["public_key"].startswith(f"ecdsa-sha2-{curve} ")
    for kind, bits in (("ed25519", None), ("rsa", 2048), ("ecdsa", 384)):
        key = keygen(tmp_path, f"k-{kind}", kind, bits)
        listing = cert_listing(write_cert(key, sign_user(server, key, principals=["admin"])["signed_key"]))
        assert listing["Signing CA"].startswith(f"{name} SHA256:") and f"ecdsa-sha2-{curve}" in listing["Signing CA"]


def test_ssh_keygen_lists_exactly_the_requested_host_certificate(ca, tmp_path):
    configure(ca, allowed_host_extensions=["login@example.com"])
    key = keygen(tmp_path, "host", "ecdsa")
    answer = sign_host(ca, key, ["web1.example.com", "10.0.0.5"], ttl="3d", extensions={"login@example.com": "x"})
    listing = cert_listing(write_cert(key, answer["signed_key"]))
    assert listing["Type"] == "ecdsa-sha2-nistp256-cert-v01@openssh.com host certificate"
    assert listing["Principals"] == ["web1.example.com", "10.0.0.5"]
    assert listing["Serial"] == answer["serial"]
    assert listing["Valid"] == f"from {utc(answer['valid_after'])} to {utc(answer['valid_before'])}"
    assert listing["Critical Options"] == []
    # ssh-keygen shows an extension it does not know as its raw data: string "x" is 00000001 78.
    assert listing["Extensions"] == ["login@example.com UNKNOWN OPTION: 0000000178 (len 5)"]


def test_host_extensions_come_only_from_the_allowlist_audit_10(ca, tmp_path):
    key = keygen(tmp_path, "host")
    r = ca.request("POST", f"{BASE}/sign-host", {"public_key": pub(key), "hostnames": ["h"],
                                                 "extensions": {"permit-pty": ""}})
    assert r.status == 400 and "allowed_host_extensions" in r.json()["error"]["message"]
    r = ca.request("POST", f"{BASE}/sign-host", {"public_key": pub(key), "hostnames": ["h"],
                                                 "critical_options": {"force-command": "x"}})
    assert r.status == 400
    listing = cert_listing(write_cert(key, sign_host(ca, key, ["h"])["signed_key"]))
    assert listing["Extensions"] == [] and listing["Critical Options"] == []


def test_critical_options_come_only_from_admin_profiles_audit_11(ca, tmp_path):
    key = keygen(tmp_path, "k")
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "critical_options": {"force-command": "sh"}})
    assert r.status == 400 and "profile" in r.json()["error"]["message"]
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "extensions": {"permit-pty": ""}})
    assert r.status == 400
    token = add_user(ca, "carol", (["sshca/ssh/**"], ["*"]))
    r = ca.request("PUT", f"{BASE}/profiles/mine", {"critical_options": {"force-command": "sh"}}, token=token)
    assert r.status == 403, "profiles are admin only, whatever policy says"
    r = ca.request("PUT", f"{BASE}/profiles/bad", {"critical_options": {"permit-everything": "yes"}})
    assert r.status == 400
    r = ca.request("PUT", f"{BASE}/profiles/bad", {"critical_options": {"source-address": "10.0.0.0/33"}})
    assert r.status == 400 and "10.0.0.0/33" in r.json()["error"]["message"]
    r = ca.request("PUT", f"{BASE}/profiles/..%2Fx", {})
    assert r.status in (400, 404)
    r = ca.request("PUT", f"{BASE}/profiles/Upper", {})
    assert r.status == 400 and "Upper" in r.json()["error"]["message"]


def test_the_mount_default_source_address_goes_on_user_certificates_audit_14(ca, tmp_path):
    configure(ca, default_source_address="127.0.0.1/32,::1")
    key = keygen(tmp_path, "k")
    listing = cert_listing(write_cert(key, sign_user(ca, key)["signed_key"]))
    assert listing["Critical Options"] == ["source-address 127.0.0.1/32,::1"]
    assert ca.request("POST", f"{BASE}/config", {"default_source_address": "nonsense"}).status == 400


def test_ttl_is_capped_by_the_mount_and_the_profile(ca, tmp_path):
    configure(ca, max_ttl="4h", default_ttl="1h")
    key = keygen(tmp_path, "k")
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "ttl": "5h"})
    assert r.status == 400 and "5h" in r.json()["error"]["message"]
    answer = sign_user(ca, key)
    assert answer["valid_before"] - answer["valid_after"] == 3600 + 120
    assert ca.request("PUT", f"{BASE}/profiles/short", {"max_ttl": "10m"}).status == 200
    assert ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "ttl": "1h", "profile": "short"}).status == 400
    answer = sign_user(ca, key, profile="short")
    assert answer["valid_before"] - answer["valid_after"] == 600 + 120, "the default shrinks to the profile's maximum"


def test_concurrent_signing_and_revocation_all_succeed_with_distinct_serials_audit_53(ca, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    key = keygen(tmp_path, "k")
    body = {"public_key": pub(key)}

    def work(i):
        if i % 5 == 4:
            return ("revoke", ca.request("POST", f"{BASE}/revoke", {"serial": str(1000 + i)}).status, None)
        r = ca.request("POST", f"{BASE}/sign-user", body)
        return ("sign", r.status, r.json().get("serial"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(60)))
    assert all(status == 200 for _, status, _ in results), results
    serials = [serial for kind, _, serial in results if kind == "sign"]
    assert len(serials) == 48 and len(set(serials)) == 48
    krl = tmp_path / "krl"
    krl.write_bytes(public(ca, "krl"))
    assert run("ssh-keygen", "-Q", "-f", krl, Path(str(key) + ".pub")).returncode == 0, "the KRL still parses"


def test_serials_are_random_non_zero_and_distinct_audit_55(ca, tmp_path):
    key = keygen(tmp_path, "k")
    serials = [int(sign_user(ca, key)["serial"]) for _ in range(40)]
    assert len(set(serials)) == 40 and 0 not in serials
    assert max(serials) > 2 ** 56, "64-bit random serials, not a counter"
    records = ca.request("GET", f"{BASE}/certs").json()["certs"]
    assert sorted(int(c["serial"]) for c in records) == sorted(serials)
    one = ca.request("GET", f"{BASE}/certs/{serials[0]}").json()
    assert one["requested_by"] == "admin" and one["signed_key"].startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert "private" not in str(one).lower()
    assert ca.request("GET", f"{BASE}/certs/012").status == 400
    assert ca.request("GET", f"{BASE}/certs/18446744073709551616").status == 400


# --- sshd ----------------------------------------------------------------------------------------------


def test_sshd_accepts_a_certificate_for_the_login_user_and_refuses_another_principal(ca, sshd, tmp_path):
    key = keygen(tmp_path, "id")
    good = write_cert(key, sign_user(ca, key, principals=["root"])["signed_key"])
    r = sshd.ssh(key, "echo logged-in", cert=good)
    assert r.returncode == 0 and r.stdout.strip() == b"logged-in", r.stderr

    other = keygen(tmp_path, "other")
    cert = write_cert(other, sign_user(ca, other, principals=["somebody-else"])["signed_key"])
    mark = len(sshd.log_text())
    r = sshd.ssh(other, cert=cert)
    assert r.returncode == 255 and b"Permission denied" in r.stderr
    assert "not a listed principal" in sshd.log_since(mark)

    plain = keygen(tmp_path, "plain")
    assert sshd.ssh(plain).returncode == 255, "a key without a certificate gets nowhere"


def test_sshd_refuses_an_expired_certificate(ca, sshd, tmp_path):
    key = keygen(tmp_path, "id")
    answer = sign_user(ca, key, principals=["root"], ttl="1s")
    cert = write_cert(key, answer["signed_key"])
    # The engine takes no clock from callers, so the only way to an expired certificate is to wait.
    while time.time() <= answer["valid_before"] + 1:
        time.sleep(0.2)
    mark = len(sshd.log_text())
    r = sshd.ssh(key, cert=cert)
    assert r.returncode == 255 and b"Permission denied" in r.stderr
    assert "expired" in sshd.log_since(mark)


def test_sshd_refuses_a_certificate_whose_source_address_excludes_loopback(ca, sshd, tmp_path):
    assert ca.request("PUT", f"{BASE}/profiles/office", {"critical_options": {"source-address": "10.0.0.0/8"}}).status == 200
    assert ca.request("PUT", f"{BASE}/profiles/local", {"critical_options": {"source-address": "127.0.0.0/8"}}).status == 200
    key = keygen(tmp_path, "id")
    mark = len(sshd.log_text())
    r = sshd.ssh(key, cert=write_cert(key, sign_user(ca, key, principals=["root"], profile="office")["signed_key"]))
    assert r.returncode == 255
    assert "source-address" in sshd.log_since(mark) or "source address" in sshd.log_since(mark)
    r = sshd.ssh(key, cert=write_cert(key, sign_user(ca, key, principals=["root"], profile="local")["signed_key"]))
    assert r.returncode == 0, r.stderr


def test_a_force_command_profile_runs_its_command_whatever_the_client_asks(ca, sshd, tmp_path):
    assert ca.request("PUT", f"{BASE}/profiles/backup",
                      {"critical_options": {"force-command": "echo forced-by-profile"}, "allowed_principals": ["root"]}).status == 200
    token = add_user(ca, "bob", (["sshca/ssh/sign-user", "sshca/ssh/principal/root", "sshca/ssh/profile/backup"], ["sign-user"]))
    key = keygen(tmp_path, "id")
    cert = write_cert(key, sign_user(ca, key, token=token, principals=["root"], profile="backup")["signed_key"])
    r = sshd.ssh(key, "echo what-i-asked-for; id", cert=cert)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"forced-by-profile"
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "principals": ["bob"], "profile": "backup"}, token=token)
    assert r.status == 400 and "not allowed by profile" in r.json()["error"]["message"]


def test_a_user_without_a_rule_cannot_sign_for_root(ca, tmp_path):
    token = add_user(ca, "alice", (["sshca/ssh/sign-user"], ["sign-user"]))
    key = keygen(tmp_path, "id")
    listing = cert_listing(write_cert(key, sign_user(ca, key, token=token)["signed_key"]))
    assert listing["Principals"] == ["alice"] and listing["Key ID"].startswith('"alice:')

    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "principals": ["root"]}, token=token)
    assert r.status == 403 and "root" in r.json()["error"]["message"]
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "principals": ["alice", "root"]}, token=token)
    assert r.status == 403
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "principals": []}, token=token)
    assert r.status == 400
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "principals": [""]}, token=token)
    assert r.status == 400 and "empty principal" in r.json()["error"]["message"]
    assert ca.request("PUT", f"{BASE}/profiles/p", {}).status == 200
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key), "profile": "p"}, token=token)
    assert r.status == 403, "a profile needs its own rule"
    assert ca.request("GET", f"{BASE}/certs", token=token).status == 403
    assert ca.request("POST", f"{BASE}/revoke", {"serial": "1"}, token=token).status == 403


def test_host_signing_is_denied_without_a_rule_audit_54(ca, tmp_path):
    token = add_user(ca, "dave", (["sshca/ssh/sign-user"], ["sign-user"]))
    key = keygen(tmp_path, "host")
    r = ca.request("POST", f"{BASE}/sign-host", {"public_key": pub(key), "hostnames": ["h.example"]}, token=token)
    assert r.status == 403
    token2 = add_user(ca, "erin", (["sshca/ssh/sign-host"], ["sign-host"]))
    sign_host(ca, key, ["h.example"], token=token2)


def test_ssh_accepts_a_host_certificate_for_its_hostname_and_refuses_it_for_another(ca, tmp_path):
    ca_line = public(ca, "ca").decode().strip()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"@cert-authority *.example.com {ca_line}\n")
    client_key = keygen(tmp_path, "id")
    client_cert = write_cert(client_key, sign_user(ca, client_key, principals=["root"])["signed_key"])

    results = {}
    for name in ("web1.example.com", "web2.example.com"):
        daemon = SSHD(tmp_path / f"sshd-{name}", ca_line + "\n", public(ca, "krl"))
        host_cert = sign_host(ca, daemon.host_key, ["web1.example.com"])["signed_key"]
        daemon.config.write_text(daemon.config.read_text() + f"HostCertificate {write_cert(daemon.host_key, host_cert)}\n")
        daemon.start()
        try:
            results[name] = daemon.ssh(client_key, "echo host-ok", cert=client_cert, known_hosts=known_hosts,
                                       host_alias=name)
        finally:
            daemon.stop()
    assert results["web1.example.com"].returncode == 0, results["web1.example.com"].stderr
    assert results["web1.example.com"].stdout.strip() == b"host-ok"
    assert results["web2.example.com"].returncode == 255
    assert b"Host key verification failed" in results["web2.example.com"].stderr


# --- KRL ------------------------------------------------------------------------------------------------


def verify_krl(tmp_path, ca_line, krl: bytes, signature: bytes):
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'metacrypt-ca namespaces="metacrypt-krl" {ca_line.strip()}\n')
    sig = tmp_path / "krl.sig"
    sig.write_bytes(signature)
    return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "metacrypt-ca",
                           "-n", "metacrypt-krl", "-s", str(sig)], input=krl, capture_output=True)


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256", "ecdsa-p384"])
def test_the_krl_signature_verifies_with_ssh_keygen_and_fails_for_a_changed_byte_audit_56(server, tmp_path, key_type):
    configure(server, key_type=key_type)
    key = keygen(tmp_path, "id")
    serial = sign_user(server, key)["serial"]
    assert server.request("POST", f"{BASE}/revoke", {"serial": serial}).status == 200
    krl, sig, ca_line = public(server, "krl"), public(server, "krl.sig"), public(server, "ca").decode()
    assert krl.startswith(b"SSHKRL\n\0") and sig.startswith(b"-----BEGIN SSH SIGNATURE-----\n")
    r = verify_krl(tmp_path, ca_line, krl, sig)
    assert r.returncode == 0, r.stderr
    assert b"Good" in r.stdout
    for position in (0, len(krl) // 2, len(krl) - 1):
        changed = bytearray(krl)
        changed[position] ^= 0x01
        assert verify_krl(tmp_path, ca_line, bytes(changed), sig).returncode != 0
    other = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed_signers"), "-I", "metacrypt-ca",
                            "-n", "file", "-s", str(tmp_path / "krl.sig")], input=krl, capture_output=True)
    assert other.returncode != 0, "the signature is bound to the metacrypt-krl namespace"


def test_a_revoked_certificate_is_refused_by_sshd_and_reported_by_ssh_keygen(ca, sshd, tmp_path):
    keys = [keygen(tmp_path, f"id{i}") for i in range(3)]
    answers = [sign_user(ca, k, principals=["root"]) for k in keys]
    certs = [write_cert(k, a["signed_key"]) for k, a in zip(keys, answers)]
    for k, c in zip(keys, certs):
        assert sshd.ssh(k, cert=c).returncode == 0
    version_before = int.from_bytes(public(ca, "krl")[12:20], "big")

    r = ca.request("POST", f"{BASE}/revoke", {"serial": answers[1]["serial"]})
    assert r.status == 200 and r.json()["revoked"] == [answers[1]["serial"]]
    krl = public(ca, "krl")
    assert int.from_bytes(krl[12:20], "big") == version_before + 1, "regenerated on every revocation"
    sshd.krl_file.write_bytes(krl)

    assert sshd.ssh(keys[0], cert=certs[0]).returncode == 0
    mark = len(sshd.log_text())
    assert sshd.ssh(keys[1], cert=certs[1]).returncode == 255
    assert "revoked" in sshd.log_since(mark).lower()
    assert sshd.ssh(keys[2], cert=certs[2]).returncode == 0
    out = run("ssh-keygen", "-Q", "-f", sshd.krl_file, *certs, check=False).stdout.decode().splitlines()
    assert [line.rsplit(": ", 1)[1] for line in out] == ["ok", "REVOKED", "ok"]
    assert ca.request("GET", f"{BASE}/certs/{answers[1]['serial']}").json()["revoked"] is True

    # Forgetting the record keeps the serial in the KRL.
    assert ca.request("DELETE", f"{BASE}/certs/{answers[1]['serial']}").status == 204
    assert ca.request("GET", f"{BASE}/certs/{answers[1]['serial']}").status == 404
    assert ca.request("POST", f"{BASE}/revoke", {"serial": answers[0]["serial"]}).status == 200
    sshd.krl_file.write_bytes(public(ca, "krl"))
    out = run("ssh-keygen", "-Q", "-f", sshd.krl_file, *certs, check=False).stdout.decode().splitlines()
    assert [line.rsplit(": ", 1)[1] for line in out] == ["REVOKED", "REVOKED", "ok"]


def test_revoking_a_key_revokes_every_certificate_of_it(ca, sshd, tmp_path):
    key, other = keygen(tmp_path, "id"), keygen(tmp_path, "other")
    first = write_cert(key, sign_user(ca, key, principals=["root"])["signed_key"])
    second_path = tmp_path / "second-cert.pub"
    second_path.write_text(sign_user(ca, key, principals=["root"])["signed_key"] + "\n")
    third = write_cert(other, sign_user(ca, other, principals=["root"])["signed_key"])
    r = ca.request("POST", f"{BASE}/revoke", {"public_key": pub(key)})
    assert r.status == 200 and len(r.json()["revoked"]) == 2
    sshd.krl_file.write_bytes(public(ca, "krl"))
    out = run("ssh-keygen", "-Q", "-f", sshd.krl_file, first, second_path, Path(str(key) + ".pub"), third,
              check=False).stdout.decode().splitlines()
    assert [line.rsplit(": ", 1)[1] for line in out] == ["REVOKED", "REVOKED", "REVOKED", "ok"]
    assert sshd.ssh(key, cert=first).returncode == 255
    assert sshd.ssh(other, cert=third).returncode == 0
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key)})
    assert r.status == 400 and "revoked" in r.json()["error"]["message"]


def test_revoking_a_key_covers_certificates_whose_record_was_deleted(ca, tmp_path):
    key, other = keygen(tmp_path, "id"), keygen(tmp_path, "other")
    answer = sign_user(ca, key)
    cert = write_cert(key, answer["signed_key"])
    control = write_cert(other, sign_user(ca, other)["signed_key"])
    assert ca.request("DELETE", f"{BASE}/certs/{answer['serial']}").status == 204
    r = ca.request("POST", f"{BASE}/revoke", {"public_key": pub(key)})
    assert r.status == 200 and r.json()["revoked"] == [], "no record left to revoke by serial"
    krl = tmp_path / "krl"
    krl.write_bytes(public(ca, "krl"))
    out = run("ssh-keygen", "-Q", "-f", krl, cert, control, check=False).stdout.decode().splitlines()
    assert [line.rsplit(": ", 1)[1] for line in out] == ["REVOKED", "ok"], "the explicit-key section covers it"


def test_a_thousand_revoked_serials_with_adjacent_runs_are_each_reported_by_ssh_keygen(server, tmp_path):
    # An imported CA key, so that the test can make certificates with chosen serials (as a CA migrated
    # from ssh-keygen would have); the engine revokes serials it has no record of.
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    answer = configure(server, private_key=pem)
    ca_line = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert answer["public_key"] == ca_line
    assert server.request("POST", f"{BASE}/config", {"key_type": "ecdsa-p256"}).status == 409, "never replaced"

    runs = [range(100, 200), range(1000, 1002), range(5000, 5003), range(2**63 - 5, 2**63 + 5),
            range(2**64 - 4, 2**64)]
    revoked = set()
    for r_ in runs:
        revoked.update(r_)
    step = 7919
    n = 10_000
    while len(revoked) < 1000:
        revoked.add(n)
        n += step
    revoked = sorted(revoked)
    near = sorted({s + d for s in revoked for d in (-1, 1) if 0 < s + d < 2**64} - set(revoked))[:300]

    r = server.request("POST", f"{BASE}/revoke", {"serials": [str(s) for s in revoked]})
    assert r.status == 200, r.body
    assert len(r.json()["revoked"]) == 1000
    krl = tmp_path / "krl"
    krl.write_bytes(public(server, "krl"))
    assert verify_krl(tmp_path, ca_line, krl.read_bytes(), public(server, "krl.sig")).returncode == 0

    subject = ed25519.Ed25519PrivateKey.generate().public_key()
    certs = tmp_path / "certs"
    certs.mkdir()
    paths = {}
    for serial in revoked + near:
        cert = (serialization.SSHCertificateBuilder().public_key(subject).serial(serial)
                .type(serialization.SSHCertificateType.USER).key_id(b"t").valid_principals([b"root"])
                .valid_after(0).valid_before(2**63).sign(private))
        path = certs / f"{serial}-cert.pub"
        path.write_bytes(cert.public_bytes())
        paths[serial] = path
    out = run("ssh-keygen", "-Q", "-f", krl, *paths.values(), check=False).stdout.decode().splitlines()
    status = {int(Path(line.split(" ")[0]).name.split("-")[0]): line.rsplit(": ", 1)[1] for line in out}
    assert len(status) == len(paths)
    assert all(status[s] == "REVOKED" for s in revoked), [s for s in revoked if status[s] != "REVOKED"][:5]
    assert all(status[s] == "ok" for s in near), [s for s in near if status[s] != "ok"][:5]
    assert len(krl.read_bytes()) < 1000 * 8 + 500, "adjacent runs are written as ranges"


def test_the_ca_and_krl_are_served_while_sealed_audit_71(ca, tmp_path):
    key = keygen(tmp_path, "id")
    assert ca.request("POST", f"{BASE}/revoke", {"serial": sign_user(ca, key)["serial"]}).status == 200
    objects = {name: public(ca, name) for name in ("ca", "krl", "krl.sig")}
    assert ca.request("POST", "/v1/sys/seal").status == 200
    for name, body in objects.items():
        assert public(ca, name) == body
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key)})
    assert r.status == 503
    ca.stop()
    ca.start()
    assert public(ca, "krl") == objects["krl"]
    ca.unseal()
    assert ca.request("POST", f"{BASE}/sign-user", {"public_key": pub(key)}).status == 200


# --- the public-key parser -----------------------------------------------------------------------------


def s_(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def line(blob: bytes, kind: bytes = None) -> str:
    if kind is None:
        kind = blob[4:4 + struct.unpack(">I", blob[:4])[0]]
    return f"{kind.decode()} {base64.b64encode(blob).decode()} test"


def openssh_blob(public_key) -> bytes:
    text = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(text.split()[1])


ED = openssh_blob(ed25519.Ed25519PrivateKey.generate().public_key())
P256 = openssh_blob(ec.generate_private_key(ec.SECP256R1()).public_key())
RSA1024 = openssh_blob(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())
RSA2048 = openssh_blob(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())


def rsa_with_padded_exponent() -> bytes:
    return s_(b"ssh-rsa") + s_(b"\x00\x01\x00\x01") + RSA2048[4 + 7 + 4 + 3:]


def p256_off_curve() -> bytes:
    point = bytearray(P256[-65:])
    point[-1] ^= 1
    return P256[:-65] + bytes(point)


BAD_KEYS = {
    "empty": "",
    "type only": "ssh-ed25519",
    "not base64": "ssh-ed25519 AAAA!!!!",
    "unpadded base64": line(P256).replace("=", ""),
    "truncated Ed25519 key": line(ED[:-1]),
    "Ed25519 key of 31 bytes": line(s_(b"ssh-ed25519") + s_(ED[-32:-1])),
    "Ed25519 key of 33 bytes": line(s_(b"ssh-ed25519") + s_(ED[-32:] + b"\0")),
    "trailing bytes": line(ED + b"\0"),
    "length prefix past the end": line(s_(b"ssh-ed25519") + struct.pack(">I", 64) + ED[-32:]),
    "truncated length prefix": line(s_(b"ssh-ed25519") + b"\0\0"),
    "unknown type": line(s_(b"ssh-dss") + s_(b"\1") * 4),
    "type field differs from the blob": line(ED, b"ecdsa-sha2-nistp256"),
    "security key": line(s_(b"sk-ssh-ed25519@openssh.com") + s_(ED[-32:]) + s_(b"ssh:")),
    "certificate": line(s_(b"ssh-ed25519-cert-v01@openssh.com") + s_(b"n" * 32) + s_(ED[-32:])),
    "RSA-1024": line(RSA1024),
    "RSA exponent with a needless zero byte": line(rsa_with_padded_exponent()),
    "ECDSA with another curve's name": line(P256.replace(b"nistp256", b"nistp384", 1), b"ecdsa-sha2-nistp256"),
    "ECDSA point off the curve": line(p256_off_curve()),
    "ECDSA point too short": line(P256[:-70] + s_(P256[-65:-1])),
    "two lines": line(ED) + "\n" + line(ED),
    "options before the type": "command=\"x\" " + line(ED),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_the_public_key_parser_refuses_malformed_keys_with_a_400(ca, case):
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": BAD_KEYS[case]})
    assert r.status == 400, (case, r.status, r.body)
    assert r.json()["error"]["code"] == "invalid_request" and len(r.json()["error"]["message"]) > 10


@pytest.mark.parametrize("blob", [ED, P256, RSA2048], ids=["ed25519", "p256", "rsa2048"])
def test_the_public_key_parser_accepts_well_formed_keys(ca, blob):
    r = ca.request("POST", f"{BASE}/sign-user", {"public_key": line(blob) + "\n"})
    assert r.status == 200, r.body


# --- the CLI --------------------------------------------------------------------------------------------


def test_the_cli_writes_the_certificate_next_to_the_key_like_ssh_keygen(ca, metacrypt_bin, tmp_path):
    env = {**os.environ, "METACRYPT_ADDR": f"https://127.0.0.1:{ca.port}", "METACRYPT_TOKEN": ca.token,
           "METACRYPT_CACERT": str(ca.tls["ca"])}
    cli = lambda *a: subprocess.run([str(metacrypt_bin), "ssh", *a], env=env, capture_output=True, timeout=30)
    key = keygen(tmp_path, "id_ed25519")
    r = cli("sign-user", "--mount", "ssh", "--principal", "root", "--ttl", "10m", f"{key}.pub")
    assert r.returncode == 0, r.stderr
    listing = cert_listing(tmp_path / "id_ed25519-cert.pub")
    assert listing["Principals"] == ["root"]
    host = keygen(tmp_path, "ssh_host_ed25519_key")
    assert cli("sign-host", "--mount", "ssh", "--hostname", "db.example", f"{host}.pub").returncode == 0
    assert cert_listing(tmp_path / "ssh_host_ed25519_key-cert.pub")["Type"].endswith("host certificate")
    r = cli("ca", "--mount", "ssh")
    assert r.returncode == 0 and r.stdout == public(ca, "ca")
    r = cli("revoke", "--mount", "ssh", listing["Serial"])
    assert r.returncode == 0, r.stderr
    assert cli("krl", "--mount", "ssh", "--out", str(tmp_path / "krl")).returncode == 0
    assert verify_krl(tmp_path, public(ca, "ca").decode(), (tmp_path / "krl").read_bytes(),
                      (tmp_path / "krl.sig").read_bytes()).returncode == 0
    out = run("ssh-keygen", "-Q", "-f", tmp_path / "krl", tmp_path / "id_ed25519-cert.pub", check=False).stdout
    assert out.strip().endswith(b"REVOKED")
    r = cli("list", "--mount", "ssh")
    assert r.returncode == 0 and listing["Serial"].encode() in r.stdout
    r = cli("sign-user", "--mount", "ssh", "--principal", "", f"{key}.pub")
    assert r.returncode != 0
