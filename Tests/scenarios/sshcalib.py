"""Helpers for the SSH CA scenario tests: keys made by ssh-keygen, a real sshd on a loopback port, and
ssh client runs against it."""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD_BINARY = "/usr/sbin/sshd"


def run(*args, check=True, input=None, env=None):
    r = subprocess.run([str(a) for a in args], capture_output=True, input=input, env=env, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stdout!r} {r.stderr!r}")
    return r


def keygen(directory: Path, name: str, kind: str = "ed25519", bits: int = None) -> Path:
    """A new key pair; returns the private key's path (the public key is beside it, + .pub)."""
    path = directory / name
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", path]
    if bits:
        args += ["-b", str(bits)]
    run(*args)
    return path


def pub(path: Path) -> str:
    return Path(str(path) + ".pub").read_text()


def write_cert(key: Path, signed_key: str) -> Path:
    cert = Path(str(key) + "-cert.pub")
    cert.write_text(signed_key + "\n")
    return cert


def cert_listing(cert: Path) -> dict:
    """`ssh-keygen -L` parsed into a dict; lists for the indented sections."""
    out = run("ssh-keygen", "-L", "-f", cert, env={**os.environ, "TZ": "UTC"}).stdout.decode()
    result, section = {}, None
    for line in out.splitlines()[1:]:
        if line.startswith("\t\t") or line.startswith("                "):
            result[section].append(line.strip())
            continue
        name, _, value = line.strip().partition(":")
        value = value.strip()
        if name in ("Principals", "Critical Options", "Extensions"):
            section = name
            result[name] = [] if value != "(none)" else []
        else:
            result[name] = value
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SSHD:
    """A real sshd, as root, on a loopback port, trusting a user CA and enforcing a KRL."""

    def __init__(self, directory: Path, ca_line: str, krl: bytes, host_certificate: str = None,
                 host_key_type: str = "ed25519"):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(self.dir, "host_key", host_key_type)
        self.ca_file = self.dir / "trusted_user_ca"
        self.ca_file.write_text(ca_line)
        self.krl_file = self.dir / "revoked.krl"
        self.krl_file.write_bytes(krl)
        self.port = free_port()
        self.log = self.dir / "sshd.log"
        lines = [
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            "UsePAM no", "StrictModes no", "AuthorizedKeysFile none", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin yes",
            f"TrustedUserCAKeys {self.ca_file}", f"RevokedKeys {self.krl_file}", "LogLevel VERBOSE",
        ]
        if host_certificate:
            cert = self.dir / "host_key-cert.pub"
            cert.write_text(host_certificate + "\n")
            lines.append(f"HostCertificate {cert}")
        self.config = self.dir / "sshd_config"
        self.config.write_text("\n".join(lines) + "\n")
        self.process = None

    def log_since(self, offset: int) -> str:
        """sshd's log from `offset` (a length of log_text() taken before a connection)."""
        time.sleep(0.1)  # sshd writes the refusal as the client disconnects
        return self.log_text()[offset:]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def host_public_key(self) -> str:
        return pub(self.host_key)

    def start(self):
        run(SSHD_BINARY, "-t", "-f", self.config)
        self.process = subprocess.Popen([SSHD_BINARY, "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError("sshd exited:\n" + self.log.read_text())
                time.sleep(0.02)
        raise AssertionError("sshd did not start:\n" + self.log.read_text())

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def ssh(self, key: Path, command: str = "true", cert: Path = None, user: str = "root", known_hosts: Path = None,
            host_alias: str = None):
        """Runs `ssh … user@127.0.0.1 command`; returns the CompletedProcess (no check)."""
        args = ["ssh", "-F", "none", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "PasswordAuthentication=no", "-o", "ConnectTimeout=10", "-p", str(self.port)]
        if cert:
            args += ["-o", f"CertificateFile={cert}"]
        if known_hosts:
            args += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                     "-o", "GlobalKnownHostsFile=/dev/null"]
        else:
            args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        if host_alias:
            args += ["-o", f"HostKeyAlias={host_alias}"]
        args += [f"{user}@127.0.0.1", command]
        return subprocess.run(args, capture_output=True, timeout=60)
