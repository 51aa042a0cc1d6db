"""TLS for every role, in one place.

* The master: hypercorn builds its server context from file paths, so
  :func:`configure_server` sets them on its config; :func:`prepare_server`
  first writes a self-signed certificate when the operator asked for one.
* The agent and the CLI: :func:`client_context` builds the one
  :class:`ssl.SSLContext` that httpx and trio-websocket both use, so the API
  calls and the event channel trust the same CA and present the same client
  certificate.

Verification is never skipped quietly: only ``insecure_skip_verify`` does it,
and it says so in the log.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

import hypercorn

from agent.config import ClientTLS, ConfigError, ServerTLS

__all__ = [
    "certificate_names",
    "client_context",
    "configure_server",
    "default_cert_hosts",
    "default_cert_ips",
    "generate_self_signed",
    "prepare_server",
]

log = logging.getLogger(__name__)

# Long enough not to expire under a lab farm, short enough to be replaced now and then.
SELF_SIGNED_DAYS = 825


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """The context an agent or the CLI connects to an ``https`` master with.

    Trusts ``tls.ca`` or, without one, the system store; presents
    ``tls.cert``/``tls.key`` when given (mutual TLS). With
    ``tls.insecure_skip_verify`` it trusts any certificate and any host name,
    and logs a warning.

    Raises:
        ConfigError: a file is missing or is not a certificate or key.
    """
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA certificate --ca {tls.ca}: {exc}") from None
    if tls.cert or tls.key:
        if not (tls.cert and tls.key):
            raise ConfigError("a client certificate needs both --cert and --key")
        try:
            context.load_cert_chain(str(tls.cert), str(tls.key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the client certificate --cert {tls.cert} --key {tls.key}: {exc}") from None
    if tls.insecure_skip_verify:
        log.warning(
            "TLS certificate verification is off (--insecure-skip-verify): anyone between here and the "
            "master can impersonate it; use --ca instead outside of tests"
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# Reading a certificate's names for an error message must not hold the message up for long.
PEEK_TIMEOUT_S = 3.0


async def certificate_names(host: str, port: int) -> tuple[str, ...]:
    """The DNS names and IP addresses the certificate served at ``host:port`` is valid for; () if unknown.

    For an error message after a host-name mismatch: the handshake that failed
    keeps no certificate, so this one reads it without verifying anything and
    sends no data. Any failure, or taking longer than :data:`PEEK_TIMEOUT_S`,
    gives ().
    """
    import trio
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with trio.move_on_after(PEEK_TIMEOUT_S):
        try:
            stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context, https_compatible=True)
            try:
                await stream.do_handshake()
                der = stream.getpeercert(binary_form=True)
            finally:
                await trio.aclose_forcefully(stream)
            names = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
        except (OSError, ssl.SSLError, trio.BrokenResourceError, ValueError, x509.ExtensionNotFound, TypeError):
            return ()
        return (*names.get_values_for_type(x509.DNSName), *map(str, names.get_values_for_type(x509.IPAddress)))
    return ()


def configure_server(http: hypercorn.Config, tls: ServerTLS) -> None:
    """Make hypercorn serve HTTPS with ``tls``, requiring client certificates when it names a CA."""
    http.certfile = str(tls.cert)
    http.keyfile = str(tls.key)
    if tls.client_ca is not None:
        http.ca_certs = str(tls.client_ca)
        http.verify_mode = ssl.CERT_REQUIRED


def prepare_server(tls: ServerTLS) -> None:
    """Check the master's certificate files, writing a self-signed pair first if asked to.

    Raises:
        ConfigError: a file is missing or unreadable, or the pair does not load.
    """
    if tls.generate and not (tls.cert.exists() and tls.key.exists()):
        generate_self_signed(tls.cert, tls.key, hosts=tls.hosts, ips=tls.ips)
        log.info(
            "Wrote a self-signed certificate to %s (key %s) for %s; give agents and the CLI --ca %s",
            tls.cert, tls.key, ", ".join([*tls.hosts, *tls.ips]), tls.cert,
        )
    elif tls.generate:
        _refuse_readable_key(tls.cert, tls.key)
        log.info("Using the certificate generated before, %s (delete it to make a new one)", tls.cert)
    probe = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        probe.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.client_ca is not None:
            probe.load_verify_locations(str(tls.client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the master's TLS files: {exc}; check --cert, --key and --ca") from None


def _refuse_readable_key(cert: Path, key: Path) -> None:
    """Refuse to serve with a generated key that other users can read.

    Tightening the mode quietly would hide that the key may already have been
    copied; like ssh, we stop and let the operator decide.

    Raises:
        ConfigError: the key is readable or writable by its group or others.
    """
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"the master's private key {key} is open to other users (mode {mode:04o}), so anyone on this machine "
            f"may have copied it and can impersonate the master: delete {cert} and {key} to generate a new pair "
            f"(agents then need the new --ca), or, if you are sure it has not leaked, chmod 600 {key}"
        )


def default_cert_hosts() -> tuple[str, ...]:
    """Names a generated certificate covers unless told: this host and localhost."""
    return tuple(dict.fromkeys(["localhost", socket.gethostname(), socket.getfqdn()]))


def default_cert_ips() -> tuple[str, ...]:
    return ("127.0.0.1", "::1")


def generate_self_signed(cert: Path, key: Path, *, hosts: Sequence[str], ips: Sequence[str]) -> None:
    """Write a self-signed certificate for ``hosts`` and ``ips`` and its private key (mode 0600).

    The certificate is its own CA (``CA:TRUE``), so clients can trust it with
    ``--ca <cert>``.

    Raises:
        ConfigError: an entry of ``ips`` is not an IP address.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    try:
        addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise ConfigError(f"--cert-ips: {exc}") from None
    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "ffrtmp master")])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(host) for host in hosts]
    alt_names += [x509.IPAddress(address) for address in addresses]
    public_key = private_key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    for path in (cert, key):
        path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key is born private: no moment where another user could read it.
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode above only applies to a new file, not to one we overwrite
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
