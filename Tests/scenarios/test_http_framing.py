"""Requests whose framing or identity is ambiguous are refused, and nothing after them is served."""
import json
import socket
import ssl


def raw_exchange(server, payload: bytes) -> bytes:
    """Sends raw bytes on one TLS connection and reads until the server closes it (or 5 s pass)."""
    ctx = server.context()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(payload)
            chunks = []
            try:
                while True:
                    data = tls.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
            except (socket.timeout, ssl.SSLError, ConnectionResetError):
                pass
            return b"".join(chunks)


def smuggled(server, framing: str, first_body: str) -> bytes:
    hidden = f"GET /v1/auth/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n\r\n"
    body = first_body + hidden
    head = (f"POST /v1/sys/health HTTP/1.1\r\nHost: x\r\n{framing.format(len=len(body))}\r\n")
    return raw_exchange(server, (head + body).encode())


def test_two_content_lengths_are_refused_and_the_smuggled_request_never_runs(kv_server):
    answer = smuggled(kv_server, "Content-Length: 2\r\nContent-Length: {len}\r\n", "{}")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, "exactly one response: the hidden request was not served"
    assert b'"admin":true' not in answer
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["error"]["code"] == "invalid_request"


def test_content_length_beside_transfer_encoding_is_refused(kv_server):
    answer = smuggled(kv_server, "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "2\r\n{}\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1
    assert b'"admin":true' not in answer


def test_two_authorization_headers_are_refused_whatever_their_order(kv_server):
    for first, second in [(kv_server.token, "mct.other"), ("mct.other", kv_server.token)]:
        request = (f"GET /v1/auth/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {first}\r\n"
                   f"Authorization: Bearer {second}\r\nConnection: close\r\n\r\n")
        answer = raw_exchange(kv_server, request.encode())
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b'"username"' not in answer
