"""Helpers for the transit scenario tests: an independent reading of the documented formats
(docs/transit.md §3), written from the specification with Python's standard library and `cryptography`,
never from the engine's code."""
import base64
import re
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

ENVELOPE = re.compile(r"^metacrypt:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]+={0,2})$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def parse_envelope(text: str):
    """(version, payload) of `metacrypt:v<N>:<base64>`."""
    m = ENVELOPE.match(text)
    assert m, f"not an envelope: {text!r}"
    version = int(m.group(1))
    assert version <= 0xFFFFFFFF
    return version, unb64(m.group(2))


def associated_data(key_name: str, version: int, context: bytes = b"") -> bytes:
    """docs/transit.md §3.2: "metacrypt-transit:" || name || ":v" || version || ":" || context."""
    return f"metacrypt-transit:{key_name}:v{version}:".encode() + context


def _rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def _quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 7)


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 as in draft-irtf-cfrg-xchacha-03 §2.2 (cryptography has no XChaCha20)."""
    assert len(key) == 32 and len(nonce16) == 16
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12); _quarter(s, 1, 5, 9, 13); _quarter(s, 2, 6, 10, 14); _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15); _quarter(s, 1, 6, 11, 12); _quarter(s, 2, 7, 8, 13); _quarter(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def xchacha20poly1305_decrypt(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """AEAD_XChaCha20_Poly1305 (draft §2.3): ChaCha20-Poly1305 under HChaCha20(key, nonce[:16]) with the
    nonce 0x00000000 || nonce[16:24]; `sealed` is nonce (24) || ciphertext || tag."""
    nonce, body = sealed[:24], sealed[24:]
    return ChaCha20Poly1305(hchacha20(key, nonce[:16])).decrypt(b"\0\0\0\0" + nonce[16:], body, aad)


def decrypt_exported(key_type: str, key: bytes, key_name: str, ciphertext: str, context: bytes = b"") -> bytes:
    """Decrypts a transit ciphertext with an exported key, following only the documentation."""
    version, sealed = parse_envelope(ciphertext)
    aad = associated_data(key_name, version, context)
    if key_type == "aes256-gcm":
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)
    assert key_type == "xchacha20-poly1305"
    return xchacha20poly1305_decrypt(key, sealed, aad)
