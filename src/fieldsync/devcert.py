"""A development certificate authority and a server certificate for ``localhost`` and
``127.0.0.1``, so that HTTPS clients (Microsoft's Dataverse SDK refuses plain HTTP) can talk to
a local ``fieldsync serve``. Not for production: the key of the authority is thrown away, and
the files are written unencrypted."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fieldsync.errors import BadRequest

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevCertificate:
    ca: Path  # the authority's certificate: what clients trust
    cert: Path  # the server certificate, signed by the authority
    key: Path  # the server certificate's private key


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldsync development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _alt_name(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not text or len(text) > 253 or any(c.isspace() or c in "/\\:@" for c in text):
        raise BadRequest(f"{text[:60]!r} is neither a host name nor an IP address")
    return x509.DNSName(text)


def make_dev_certificate(
    folder: Path, names: tuple[str, ...] = DEFAULT_NAMES, days: int = 825
) -> DevCertificate:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` (readable by the owner only) into
    ``folder``; the server certificate covers ``names`` (host names and IP addresses)."""
    if not 1 <= days <= 825:
        raise BadRequest("a development certificate lasts 1 to 825 days")
    alt_names = [_alt_name(n) for n in names]
    if not alt_names:
        raise BadRequest("a certificate needs at least one host name or address")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fieldsync development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    out = DevCertificate(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(out.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return out


def instructions(made: DevCertificate, port: int = 8443) -> str:
    ca, cert, key = (p.resolve() for p in (made.ca, made.cert, made.key))
    return "\n".join(
        [
            f"wrote {ca} (the certificate authority), {cert} and {key}",
            "",
            "serve HTTPS with them:",
            f"  fieldsync serve --port {port} --ssl-certfile {cert} --ssl-keyfile {key}",
            "",
            "make Python clients trust the authority:",
            f"  export REQUESTS_CA_BUNDLE={ca}   # requests and the Dataverse SDK",
            f"  export SSL_CERT_FILE={ca}        # the ssl module's default context (urllib)",
            f"  httpx.Client(verify=ssl.create_default_context(cafile='{ca}'))   # httpx",
            f"then connect to https://127.0.0.1:{port} or https://localhost:{port}",
        ]
    )
