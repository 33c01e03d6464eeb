"""Certificates and keys of the local control plane, made with the `openssl` CLI.

The API server authenticates every client by an X.509 certificate signed by a
throwaway CA: the admin (group `system:masters`), the controller manager
(`system:kube-controller-manager`, bound by the default RBAC policy) and any test
identity. A certificate's CN is the user name and its O fields are the groups,
which is how a test gets a non-admin identity to check RBAC against. The
`openssl` CLI keeps this package free of a Python crypto dependency.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_FORBIDDEN_IN_NAMES = set("/\\+=,\n\r\t\0")

_CA_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
"""

_LEAF_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = {usage}
authorityKeyIdentifier = keyid
{san}
"""


class PKIError(RuntimeError):
    """openssl failed or was given a name it cannot encode."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    try:
        subprocess.run(
            ["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError as exc:
        raise PKIError(
            "the `openssl` command is required to make control-plane certificates"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise PKIError(f"openssl {' '.join(args[:2])} failed:\n{exc.stderr}") from exc


def _check_name(value: str, what: str) -> str:
    if not value or _FORBIDDEN_IN_NAMES & set(value):
        raise PKIError(
            f"{what} {value!r} is empty or contains one of / \\ + = , or a control character"
        )
    return value


def subject(common_name: str, organizations: Sequence[str] = ()) -> str:
    """An openssl `-subj` string: one O per group, then the CN (the user name)."""
    parts = [f"/O={_check_name(o, 'group')}" for o in organizations]
    parts.append(f"/CN={_check_name(common_name, 'user name')}")
    return "".join(parts)


class CertificateAuthority:
    """A self-signed CA in a directory, able to issue server and client certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pair = KeyPair(directory / "ca.crt", directory / "ca.key")

    @classmethod
    def create(cls, directory: Path, name: str = "modelops-dev-ca") -> CertificateAuthority:
        """Make a new CA (P-256 key, ten years) in `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = cls(directory)
        config = directory / "ca.cnf"
        config.write_text(_CA_CONFIG)
        _openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(ca.pair.key), "-out", str(ca.pair.cert), "-days", "3650",
            "-subj", f"/CN={name}", "-config", str(config), "-extensions", "ext",
            cwd=directory,
        )  # fmt: skip
        ca.pair.key.chmod(0o600)
        return ca

    def issue(
        self,
        stem: str,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server_names: Sequence[str] = (),
        server_ips: Sequence[str] = (),
        directory: Path | None = None,
    ) -> KeyPair:
        """Issue `<stem>.crt`/`<stem>.key`: a server certificate when names or IPs are
        given, otherwise a client certificate for user `common_name` in `organizations`."""
        out = directory or self.directory
        out.mkdir(parents=True, exist_ok=True)
        pair = KeyPair(out / f"{stem}.crt", out / f"{stem}.key")
        sans = [f"DNS:{n}" for n in server_names] + [f"IP:{ip}" for ip in server_ips]
        config = out / f"{stem}.cnf"
        config.write_text(
            _LEAF_CONFIG.format(
                usage="serverAuth" if sans else "clientAuth",
                san=f"subjectAltName = {','.join(sans)}" if sans else "",
            )
        )
        _openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "365",
            "-subj", subject(common_name, organizations), "-config", str(config),
            "-extensions", "ext", "-CA", str(self.pair.cert), "-CAkey", str(self.pair.key),
            cwd=out,
        )  # fmt: skip
        pair.key.chmod(0o600)
        config.unlink()
        return pair


def service_account_keys(directory: Path) -> KeyPair:
    """The RSA key pair that signs (apiserver, controller manager) and verifies
    service-account tokens; `cert` is the PEM public key."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pair.key),
        cwd=directory,
    )  # fmt: skip
    pair.key.chmod(0o600)
    _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert), cwd=directory)
    return pair
