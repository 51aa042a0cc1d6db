"""TLS contexts, the generated certificate, the security flags, and inputs at private addresses."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from agent.cli import _server_tls, master_parser, worker_parser
from agent.config import ClientTLS, ConfigError
from agent.models import Job
from agent.scenarios import JobRejected, build_spec
from agent.tls import client_context, generate_self_signed


def test_a_generated_certificate_covers_its_names_and_keeps_its_key_private(tmp_path: Path) -> None:
    """SANs as asked, usable as its own CA, key file mode 0600."""
    generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", hosts=["localhost", "m.lan"], ips=["127.0.0.1", "::1"])
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "m.lan"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    client_context(ClientTLS(ca=tmp_path / "c.pem"))  # loads as a CA


def test_a_bad_ip_for_the_certificate_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--cert-ips"):
        generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", hosts=["localhost"], ips=["not-an-ip"])


def test_the_client_context_verifies_by_default() -> None:
    """No flags: the system store, certificate and host name checked."""
    context = client_context(ClientTLS())
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_skipping_verification_is_explicit_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        context = client_context(ClientTLS(insecure_skip_verify=True))
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)
    assert [r for r in caplog.records if "--insecure-skip-verify" in r.getMessage()]


@pytest.mark.parametrize(
    ("tls", "flag"),
    [
        (ClientTLS(ca=Path("/nonexistent/ca.pem")), "--ca"),
        (ClientTLS(cert=Path("/nonexistent/c.pem")), "--key"),
        (ClientTLS(cert=Path("/nonexistent/c.pem"), key=Path("/nonexistent/k.pem")), "--cert"),
    ],
)
def test_unusable_tls_files_are_a_config_error_naming_the_flag(tls: ClientTLS, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        client_context(tls)


def test_a_client_certificate_from_a_ca_loads(tmp_path: Path) -> None:
    pem = tmp_path / "worker.pem"
    trustme.CA().issue_cert("worker").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_context(ClientTLS(cert=pem, key=pem))


def test_mtls_on_the_master_needs_the_client_ca(capsys: pytest.CaptureFixture[str]) -> None:
    parser = master_parser()
    with pytest.raises(SystemExit):
        _server_tls(parser, parser.parse_args(["--mtls"]))
    assert "--mtls needs --ca" in capsys.readouterr().err


def test_generate_cert_defaults_to_files_in_the_current_directory() -> None:
    parser = master_parser()
    tls = _server_tls(parser, parser.parse_args(["--generate-cert", "--cert-hosts", "a,b", "--cert-ips", "10.0.0.1"]))
    assert tls is not None
    assert (tls.cert, tls.key, tls.hosts, tls.ips) == (Path("master.crt"), Path("master.key"), ("a", "b"), ("10.0.0.1",))


def test_plain_http_is_the_default() -> None:
    parser = master_parser()
    assert _server_tls(parser, parser.parse_args([])) is None


def test_security_flags_read_their_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("CA", "/ca.pem"), ("INSECURE_SKIP_VERIFY", "true"), ("ALLOW_MASTER_AS_WORKER", "1"),
                        ("SKIP_CONFIRMATION", "yes"), ("ALLOW_PRIVATE_INPUTS", "on"), ("API_KEY_FILE", "/k")]:
        monkeypatch.setenv(f"FFRTMP_{name}", value)
    args = worker_parser().parse_args([])
    assert args.ca == Path("/ca.pem") and args.api_key_file == Path("/k")
    assert args.insecure_skip_verify and args.allow_master_as_worker and args.skip_confirmation
    assert args.allow_private_inputs


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/a.mp4", "http://localhost/a.mp4", "http://media.localhost/a", "http://10.1.2.3/a",
     "http://192.168.1.5/a", "http://172.16.0.1/a", "http://100.64.0.1/a", "http://169.254.169.254/latest",
     "http://[::1]/a", "http://[fe80::1]/a", "http://[fd00::1]/a", "http://[::ffff:127.0.0.1]/a",
     "http://127.1/a", "http://2130706433/a", "http://0x7f.1/a", "http://0/a", "srt://10.0.0.1:9000"],
)
def test_inputs_at_private_addresses_need_the_operators_consent(url: str) -> None:
    """Refused naming --allow-private-inputs, in every spelling the resolver accepts; allowed with it."""
    job = Job(id="j", scenario="144p30-h264", parameters={"input": url})
    with pytest.raises(JobRejected, match="--allow-private-inputs"):
        build_spec(job)
    assert build_spec(job, allow_private_inputs=True).input == url


@pytest.mark.parametrize("url", ["http://example.com/a.mp4", "http://8.8.8.8/a", "http://[2606:4700::1111]/a"])
def test_inputs_at_public_addresses_and_names_pass(url: str) -> None:
    assert build_spec(Job(id="j", scenario="144p30-h264", parameters={"input": url})).input == url
