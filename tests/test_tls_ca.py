"""The project CA and its CLI: what is written, with which modes, and what is refused."""

from __future__ import annotations

import ipaddress
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.cli import main
from broker.session import BusConfig
from broker.tls.ca import CaLayout, init_ca, issue_client_cert, issue_server_cert
from schemas.errors import ConfigError


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_device_certificate_chains_to_the_ca_and_carries_the_device_id(tmp_path: Path) -> None:
    layout = CaLayout(tmp_path)
    init_ca(tmp_path)
    issue_server_cert(tmp_path, ["broker.lan", "192.168.1.10"])
    files = issue_client_cert(tmp_path, "gw-1")
    cert, ca = _cert(files.cert), _cert(layout.ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-1"
    assert cert.issuer == ca.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    cert.verify_directly_issued_by(ca)
    sans = _cert(layout.server.cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.lan"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.10")]
    for key in (layout.ca.key, layout.server.key, files.key):
        assert _mode(key) == 0o600
    out = subprocess.run(["openssl", "verify", "-CAfile", str(layout.ca.cert), str(files.cert),
                          str(layout.server.cert)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_existing_ca_is_replaced_only_with_force(tmp_path: Path) -> None:
    first = init_ca(tmp_path)
    before = first.cert.read_bytes()
    with pytest.raises(ConfigError, match=r"already exists.*--force"):
        init_ca(tmp_path)
    assert first.cert.read_bytes() == before
    init_ca(tmp_path, force=True)
    assert first.cert.read_bytes() != before


@pytest.mark.parametrize(("call", "message"), [
    (lambda d: issue_client_cert(d, "gw-1"), "no project CA"),
    (lambda d: (init_ca(d), issue_client_cert(d, "bad/name")), "client certificate name"),
    (lambda d: (init_ca(d), issue_server_cert(d, [])), "at least one --host"),
    (lambda d: (init_ca(d), issue_server_cert(d, ["a b"])), "host name or an IP"),
    (lambda d: init_ca(d, days=0), "positive whole number"),
])
def test_mistakes_are_config_errors_that_say_what(tmp_path: Path, call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call(tmp_path)  # type: ignore[operator]


def test_cli_steps_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = tmp_path / "tls"
    assert main(["tls", "init-ca", "--dir", str(ca_dir)]) == 0
    assert main(["tls", "init-ca", "--dir", str(ca_dir)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["tls", "server-cert", "--dir", str(ca_dir), "--host", "localhost"]) == 0
    assert main(["tls", "device-cert", "gw-1", "--dir", str(ca_dir), "--json"]) == 0
    assert '"cert": "' + str(ca_dir / "clients" / "gw-1.pem") in capsys.readouterr().out
    assert main(["tls", "--help"]) == 0
    assert "device-cert" in capsys.readouterr().out

    devices = tmp_path / "devices.csv"
    devices.write_text("gw-1\n")
    out = tmp_path / "site"
    assert main(["mosquitto-config", "--devices", str(devices), "--out", str(out),
                 "--tls-ca", str(ca_dir / "ca.pem"), "--tls-cert", str(ca_dir / "server.pem"),
                 "--tls-key", str(ca_dir / "server.key"), "--client-certs",
                 "--loopback-port", "1883"]) == 0
    conf = (out / "mosquitto.conf").read_text().splitlines()
    assert conf.index("listener 8883 0.0.0.0") < conf.index("require_certificate true") \
        < conf.index("use_identity_as_username true") < conf.index("listener 1883 127.0.0.1")
    assert main(["mosquitto-config", "--devices", str(devices), "--out", str(out),
                 "--tls-cert", str(ca_dir / "server.pem"), "--tls-key", str(ca_dir / "server.key"),
                 "--client-certs"]) == 2
    assert "--client-certs needs --tls-ca" in capsys.readouterr().err


def test_bus_config_client_certificate_keys() -> None:
    cfg = BusConfig.from_mapping({"device": "gw-1", "tls_ca": "ca.pem", "tls_cert": "gw-1.pem",
                                  "tls_key": "gw-1.key"})
    assert cfg.tls_cert == Path("gw-1.pem") and cfg.tls_key == Path("gw-1.key")
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        BusConfig.from_mapping({"device": "gw-1", "tls_ca": "ca.pem", "tls_cert": "gw-1.pem"})
    with pytest.raises(ConfigError, match="tls_cert needs tls_ca"):
        BusConfig.from_mapping({"device": "gw-1", "tls_cert": "a.pem", "tls_key": "a.key"})
    with pytest.raises(ConfigError, match=r"tls_ca .*does not exist"):
        BusConfig(device="gw-1", tls_ca=Path("/nonexistent/ca.pem")).tls_context()
