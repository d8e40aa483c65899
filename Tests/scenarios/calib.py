"""Helpers for the CA engine's scenario tests: a root + intermediate + profiles on a fresh server, CSRs made
by Python `cryptography`, and the real peers (openssl, curl, pkilint) run as subprocesses."""
import datetime
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID

from conftest import engine_server

BASE = "/v1/ca/ca"


def ok(r, status=200):
    assert r.status == status, (r.status, r.body)
    return r.json() if r.body else None


def refused(r, *fragments, status=400):
    """Asserts a 4xx whose message contains every fragment."""
    assert r.status == status, (r.status, r.body)
    message = r.json()["error"]["message"]
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def ca_server(server_factory, bundled_engine, key_type="ecdsa-p256", **profile):
    """A server with the CA mounted at `ca`, issuers `root` and `int` (signed by root), and profiles
    `web` (server) and `client`."""
    # Issuing as fast as the machine allows would trip the per-caller rate limit; these tests are not about it.
    s = engine_server(server_factory, bundled_engine("CA"), "ca",
                      extra={"rate_limits": {"identity": {"rate": 0, "burst": 0}}})
    ok(s.request("POST", f"{BASE}/issuers/root", {"common_name": "Test Root CA", "organization": "Metacrypt Tests",
                                                  "country": "NL", "key_type": key_type, "ttl": "3650d"}))
    ok(s.request("POST", f"{BASE}/issuers/int", {"common_name": "Test Issuing CA", "organization": "Metacrypt Tests",
                                                 "country": "NL", "key_type": key_type, "parent": "root",
                                                 "ttl": "1825d"}))
    web = {"issuer": "int", "allowed_domains": ["example.com"], "allow_subdomains": True, "allow_ip_sans": True,
           "max_ttl": "90d", "server": True}
    web.update(profile)
    ok(s.request("PUT", f"{BASE}/profiles/web", web))
    ok(s.request("PUT", f"{BASE}/profiles/client", {
        "issuer": "int", "allowed_domains": ["users.example.com"], "allow_subdomains": True, "allow_email": True,
        "server": False, "client": True, "max_ttl": "30d"}))
    return s


def write(directory: Path, name: str, data) -> Path:
    path = directory / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def public(s, issuer, what, accept=None):
    headers = {"Accept": accept} if accept else {}
    r = s.request("GET", f"{BASE}/issuers/{issuer}/{what}", token="", headers=headers)
    assert r.status == 200, (r.status, r.body)
    return r.body


def run(*args, check=True, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def openssl_verify(root: Path, intermediate: Path, leaf: Path, *extra, purpose="sslserver"):
    return run("openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", root, "-untrusted",
               intermediate, *extra, leaf, check=False)


def make_csr(key=None, common_name="csr.example.com", dns=("csr.example.com",), ca=None, key_usage=None,
             sign_with=None):
    """A CSR built with `cryptography`: optional basicConstraints and keyUsage requests, or a signature by
    another key (a bad proof of possession)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage:
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                     encipher_only=False, decipher_only=False)
        flags.update({k: True for k in key_usage})
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    csr = builder.sign(sign_with or key, hashes.SHA256())
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    if sign_with is not None:
        # Same request, signed by a different key: rebuild with the victim's public key inside.
        pem = swap_public_key(csr, key)
    return pem


def swap_public_key(csr, key):
    """Re-encodes `csr` with `key`'s public key but the original signature: the signature cannot verify."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    der = csr.public_bytes(serialization.Encoding.DER)
    old = csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    new = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert len(old) == len(new) and old in der
    import base64
    body = base64.encodebytes(der.replace(old, new)).decode()
    return "-----BEGIN CERTIFICATE REQUEST-----\n" + body + "-----END CERTIFICATE REQUEST-----\n"


def rsa_key(bits):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def dsa_key():
    return dsa.generate_private_key(key_size=2048)


def pkilint(kind: str, path: Path):
    """Runs the pkilint linter for `kind` and returns (errors, warnings) as lists of finding lines."""
    if kind == "crl":
        result = run("lint_crl", "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", path, check=False)
    else:
        result = run("lint_pkix_cert", "lint", "-s", "WARNING", path, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    errors = [line for line in lines if "(ERROR)" in line or "(FATAL)" in line or "ERROR" in line.split(":")[0]]
    warnings = [line for line in lines if "WARNING" in line]
    return result, errors, warnings


def utc(dt):
    return dt if dt.tzinfo else dt.replace(tzinfo=datetime.timezone.utc)
