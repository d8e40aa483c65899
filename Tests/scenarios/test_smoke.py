"""The C example engine stores and reads values through the host, like any engine."""


def test_c_engine_round_trip_through_the_host(kv_server):
    r = kv_server.request("PUT", "/v1/kv/kv/data/greeting", {"text": "hello"})
    assert r.status == 204, r.body
    r = kv_server.request("GET", "/v1/kv/kv/data/greeting")
    assert r.status == 200
    assert r.json() == {"text": "hello"}
    r = kv_server.request("GET", "/v1/kv/kv/data")
    assert r.json() == {"keys": ["greeting"]}
