"""Values that would make invalid certificates or name nobody are refused with a 400."""
import base64
import struct

from conftest import engine_server


def test_ca_refuses_path_lengths_outside_rfc_5280_and_unknown_ttl_modes(server_factory, bundled_engine):
    s = engine_server(server_factory, bundled_engine("CA"), "ca")
    for length in (-1, 17, 1099511627776):
        r = s.request("POST", "/v1/ca/ca/issuers/x", {"common_name": "X", "max_path_length": length})
        assert r.status == 400 and "max_path_length" in r.json()["error"]["message"], (length, r.body)
    r = s.request("POST", "/v1/ca/ca/issuers/root", {"common_name": "Root", "max_path_length": 1})
    assert r.status == 200, r.body
    r = s.request("POST", "/v1/ca/ca/issuers/int", {"common_name": "Int", "parent": "root", "max_path_length": 5})
    assert r.status == 400 and "path length" in r.json()["error"]["message"], "not silently capped"
    r = s.request("POST", "/v1/ca/ca/issuers/int", {"common_name": "Int", "parent": "root", "ttl_past_issuer": "maybe"})
    assert r.status == 400 and "ttl_past_issuer" in r.json()["error"]["message"]


def ssh_key(blob_parts):
    blob = b"".join(struct.pack(">I", len(p)) + p for p in blob_parts)
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def test_ssh_refuses_small_order_keys_and_hostnames_that_are_not_names(server_factory, bundled_engine):
    s = engine_server(server_factory, bundled_engine("SSHCA"), "sshca")
    assert s.request("POST", "/v1/sshca/sshca/config", {"key_type": "ed25519"}).status in (200, 201)
    for point in (bytes(32), b"\x01" + bytes(31)):
        r = s.request("POST", "/v1/sshca/sshca/sign-user", {"public_key": ssh_key([b"ssh-ed25519", point])})
        assert r.status == 400 and "small-order" in r.json()["error"]["message"], r.body
    good = ssh_key([b"ssh-ed25519", bytes(range(1, 33))])
    for name in ("a..b", "a_b.com", "-a.com", "a-.com", ".a.com", "a.com.", "x" * 64 + ".com"):
        r = s.request("POST", "/v1/sshca/sshca/sign-host", {"public_key": good, "hostnames": [name]})
        assert r.status == 400, (name, r.status, r.body)
    for name in ("host.example.com", "*.example.com", "127.0.0.1", "::1"):
        r = s.request("POST", "/v1/sshca/sshca/sign-host", {"public_key": good, "hostnames": [name]})
        assert r.status in (200, 201), (name, r.status, r.body)
