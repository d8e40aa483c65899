"""An independent reader of user-engine envelopes, written from docs/user.md section 3 alone.

It shares no code with the engine: Python's `cryptography` does the ECDH, HKDF and AES-GCM, and the
parser below follows the field tables of the document. Tests use it to open envelopes addressed to keys
the server never saw, and to take envelopes apart (to tamper with chosen fields).
"""
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"MCUE"
VERSION_1 = 1
PAYLOAD_AES_256_GCM = 1
ALG_X25519 = 1
ALG_P256 = 2
EPHEMERAL_SIZE = {ALG_X25519: 32, ALG_P256: 65}
SALT_SIZE = 32
WRAPPED_SIZE = 60
MAX_RECIPIENTS = 1024
MAX_AAD = 4096
MAX_PLAINTEXT = 524288
INFO_LABEL = b"metacrypt/user-envelope/v1/wrap"


class CannotOpen(Exception):
    """The one failure of opening, whatever the cause."""


@dataclass
class Stanza:
    start: int            # offset of the algorithm byte in the envelope
    algorithm: int
    username: str
    key_version: int
    ephemeral: bytes
    salt: bytes
    wrapped: bytes
    prefix: bytes         # algorithm .. salt: the wrap's AAD

    @property
    def wrapped_offset(self):
        return self.start + len(self.prefix)


@dataclass
class Parsed:
    aad: bytes
    aad_offset: int
    stanzas: list
    header: bytes
    payload: bytes


def _valid_username(name: bytes) -> bool:
    if not 1 <= len(name) <= 64:
        return False
    first = b"abcdefghijklmnopqrstuvwxyz0123456789"
    rest = first + b"._-"
    return name[0] in first and all(c in rest for c in name)


def parse(envelope: bytes) -> Parsed:
    """Section 3.4 step 1: a strict parse; any problem is CannotOpen."""
    pos = 0

    def take(n):
        nonlocal pos
        if n < 0 or pos + n > len(envelope):
            raise CannotOpen()
        out = envelope[pos:pos + n]
        pos += n
        return out

    if take(4) != MAGIC or take(1)[0] != VERSION_1 or take(1)[0] != PAYLOAD_AES_256_GCM:
        raise CannotOpen()
    (count,) = struct.unpack(">H", take(2))
    (aad_length,) = struct.unpack(">I", take(4))
    if not 1 <= count <= MAX_RECIPIENTS or aad_length > MAX_AAD:
        raise CannotOpen()
    aad_offset = pos
    aad = take(aad_length)
    stanzas, names = [], set()
    for _ in range(count):
        start = pos
        algorithm = take(1)[0]
        if algorithm not in EPHEMERAL_SIZE:
            raise CannotOpen()
        name_length = take(1)[0]
        name = take(name_length)
        if not _valid_username(name) or name in names:
            raise CannotOpen()
        names.add(name)
        (key_version,) = struct.unpack(">I", take(4))
        if key_version < 1:
            raise CannotOpen()
        ephemeral = take(EPHEMERAL_SIZE[algorithm])
        salt = take(SALT_SIZE)
        prefix = envelope[start:pos]
        wrapped = take(WRAPPED_SIZE)
        stanzas.append(Stanza(start, algorithm, name.decode("ascii"), key_version, ephemeral, salt, wrapped, prefix))
    header = envelope[:pos]
    payload = envelope[pos:]
    if len(payload) < 28 or len(payload) - 28 > MAX_PLAINTEXT:
        raise CannotOpen()
    return Parsed(aad, aad_offset, stanzas, header, payload)


def _raw_public(private_key) -> bytes:
    if isinstance(private_key, x25519.X25519PrivateKey):
        return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)


def _open_aead(key: bytes, box: bytes, aad: bytes) -> bytes:
    # nonce (12) || ciphertext || tag (16); cryptography takes ciphertext||tag together.
    return AESGCM(key).decrypt(box[:12], box[12:], aad)


def open_envelope(envelope: bytes, username: str, private_key):
    """Section 3.4: returns (plaintext, aad) or raises CannotOpen."""
    try:
        parsed = parse(envelope)
        algorithm = ALG_X25519 if isinstance(private_key, x25519.X25519PrivateKey) else ALG_P256
        stanza = next((s for s in parsed.stanzas if s.username == username), None)
        if stanza is None or stanza.algorithm != algorithm:
            raise CannotOpen()
        if algorithm == ALG_X25519:
            shared = private_key.exchange(x25519.X25519PublicKey.from_public_bytes(stanza.ephemeral))
            if shared == bytes(32):
                raise CannotOpen()
        else:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), stanza.ephemeral)
            shared = private_key.exchange(ec.ECDH(), peer)
        name = stanza.username.encode("ascii")
        info = (INFO_LABEL + bytes([stanza.algorithm, len(name)]) + name + struct.pack(">I", stanza.key_version)
                + stanza.ephemeral + _raw_public(private_key))
        kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=stanza.salt, info=info).derive(shared)
        dek = _open_aead(kek, stanza.wrapped, stanza.prefix)
        if len(dek) != 32:
            raise CannotOpen()
        return _open_aead(dek, parsed.payload, parsed.header), parsed.aad
    except CannotOpen:
        raise
    except (InvalidTag, ValueError):
        raise CannotOpen()


def raw_public_key(private_key) -> bytes:
    """The raw public key as the API takes it: 32 bytes (X25519) or the 65-byte uncompressed P-256 point."""
    return _raw_public(private_key)


def raw_private_key(private_key) -> bytes:
    if isinstance(private_key, x25519.X25519PrivateKey):
        return private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
    return private_key.private_numbers().private_value.to_bytes(32, "big")
