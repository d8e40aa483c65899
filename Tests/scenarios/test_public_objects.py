"""Public objects (ABI 1.1): non-secret bytes an engine publishes and the host serves itself, even sealed."""
import sqlite3


def test_a_published_object_is_served_by_content_type_even_while_sealed(kv_server):
    s = kv_server
    assert s.request("PUT", "/v1/kv/kv/public/notice", raw=b"hello, world").status == 204

    r = s.request("GET", "/v1/kv/kv/public/notice", token="")
    assert r.status == 200 and r.body == b"hello, world"
    assert r.headers["content-type"] == "text/plain", "the first listed type is the default"
    r = s.request("GET", "/v1/kv/kv/public/notice", token="", headers={"Accept": "application/json"})
    assert r.json() == {"published": True} and r.headers["content-type"] == "application/json"
    r = s.request("GET", "/v1/kv/kv/public/notice", token="",
                  headers={"Accept": "image/png;q=0.9, application/json;q=0.5"})
    assert r.headers["content-type"] == "application/json", "the first stored type named in Accept wins"

    assert s.request("POST", "/v1/sys/seal").status == 200
    r = s.request("GET", "/v1/kv/kv/public/notice", token="")
    assert r.status == 200 and r.body == b"hello, world", "served while sealed (audit #71)"
    r = s.request("GET", "/v1/kv/kv/data/anything", token="")
    assert r.status == 503 and r.json()["error"]["code"] == "sealed", "other engine routes stay sealed"
    r = s.request("GET", "/v1/kv/kv/public/missing", token="")
    assert r.status == 404 and r.json()["error"]["code"] == "not_found"


def test_publishing_is_admin_only_and_unmounting_removes_the_objects(kv_server):
    s = kv_server
    r = s.request("PUT", "/v1/kv/kv/public/x", raw=b"x", token="")
    assert r.status == 401
    assert s.request("PUT", "/v1/kv/kv/public/x", raw=b"x").status == 204
    assert s.request("DELETE", "/v1/sys/mounts/kv").status == 200
    assert s.request("GET", "/v1/kv/kv/public/x", token="").status == 404
    db = sqlite3.connect(str(s.dir / "data" / "metacrypt.db"))
    assert db.execute("SELECT count(*) FROM public_objects").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM mount_routing WHERE name = 'kv'").fetchone()[0] == 0


def test_a_restarted_sealed_server_still_serves_public_objects(kv_server):
    s = kv_server
    assert s.request("PUT", "/v1/kv/kv/public/crl", raw=b"signed list").status == 204
    s.stop()
    s.start()
    r = s.request("GET", "/v1/kv/kv/public/crl", token="")
    assert r.status == 200 and r.body == b"signed list", "routing to public objects needs no unseal"
