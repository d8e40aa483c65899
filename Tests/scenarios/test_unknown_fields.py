"""A misspelt field is an error, never a silently weaker request."""
import base64


def test_host_bodies_refuse_fields_they_do_not_name(kv_server):
    s = kv_server
    r = s.request("PUT", "/v1/sys/policy/rules/prio", {"priorty": 100, "effect": "deny", "users": ["bob"],
                                                       "resources": ["**"], "actions": ["*"]})
    assert r.status == 400 and "priorty" in r.json()["error"]["message"], r.body
    assert s.request("GET", "/v1/sys/policy/rules/prio").status == 404, "nothing was stored"
    r = s.request("POST", "/v1/sys/mounts/k2", {"type": "kv", "config": {"x": 1}})
    assert r.status == 400 and "config" in r.json()["error"]["message"]
    r = s.request("POST", "/v1/auth/login", {"username": "admin", "password": "whatever1", "ttl": "9999d"}, token="")
    assert r.status == 400 and "ttl" in r.json()["error"]["message"]
    r = s.request("POST", "/v1/sys/accounts/eve", {"password": "long enough", "role": ["admin"]})
    assert r.status == 400 and "role" in r.json()["error"]["message"]


def test_an_invalid_value_is_named_as_such_not_as_bad_json(kv_server):
    r = kv_server.request("POST", "/v1/sys/accounts/eve", {"password": "long enough", "roles": ["superuser"]})
    assert r.status == 400
    assert "roles" in r.json()["error"]["message"] and "not valid JSON" not in r.json()["error"]["message"]


def test_ssh_profiles_and_signing_refuse_misspelt_options(server_factory, bundled_engine):
    from conftest import engine_server
    s = engine_server(server_factory, bundled_engine("SSHCA"), "sshca")
    assert s.request("POST", "/v1/sshca/sshca/config", {"key_type": "ed25519"}).status in (200, 201)
    r = s.request("PUT", "/v1/sshca/sshca/profiles/strict", {"extentions": [], "allowed_principal": ["deploy"]})
    assert r.status == 400
    assert "allowed_principal" in r.json()["error"]["message"] or "extentions" in r.json()["error"]["message"]
    assert s.request("GET", "/v1/sshca/sshca/profiles/strict").status == 404
    r = s.request("POST", "/v1/sshca/sshca/config", {"max_tll": "1h"})
    assert r.status == 400 and "max_tll" in r.json()["error"]["message"]


def test_user_encrypt_refuses_a_misspelt_aad(server_factory, bundled_engine):
    from conftest import engine_server
    s = engine_server(server_factory, bundled_engine("User"), "user")
    assert s.request("POST", "/v1/user/user/register", {}).status in (200, 201)
    r = s.request("POST", "/v1/user/user/encrypt", {"recipients": ["admin"], "plaintext": "YQ==",
                                                    "add": base64.b64encode(b"ticket").decode()})
    assert r.status == 400 and "add" in r.json()["error"]["message"], r.body


def test_engine_reasons_keep_what_follows_a_nul(server_factory, bundled_engine):
    from conftest import engine_server
    s = engine_server(server_factory, bundled_engine("Transit"), "transit")
    r = s.request("POST", "/v1/transit/transit/keys/nk", {"type": "aes\u0000tail"})
    assert r.status == 400
    assert "tail" in r.json()["error"]["message"], "the reason was not cut at the NUL"
