"""Settings for a Temporal cluster beyond the dev server: TLS, mTLS and an API key; refused at start-up when
the files cannot be read or the client pair is half given."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.service import TLSConfig

from services.config import Settings
from services.resources import temporal_tls
from tests.conftest import BIN_DIR


def test_plaintext_by_default_and_tls_when_asked_or_implied(tmp_path: Path) -> None:
    assert temporal_tls(Settings()) is None
    # An API key alone: the SDK turns TLS on by itself (tls=None), with the system's CAs.
    assert temporal_tls(Settings(temporal_api_key="key")) is None  # type: ignore[arg-type]
    assert temporal_tls(Settings(temporal_tls=True)) == TLSConfig()
    assert temporal_tls(Settings(temporal_tls_server_name="temporal.internal")) == TLSConfig(
        domain="temporal.internal"
    )
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_bytes(f"-----{path.name}-----".encode())
    mtls = Settings(temporal_tls_ca=ca, temporal_tls_cert=cert, temporal_tls_key=key)
    assert mtls.temporal_uses_tls
    assert temporal_tls(mtls) == TLSConfig(
        server_root_ca_cert=b"-----ca.pem-----",
        client_cert=b"-----client.pem-----",
        client_private_key=b"-----client.key-----",
    )


def test_a_half_pair_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_bytes(b"cert")
    with pytest.raises(ValidationError, match="GIANTFLOW_TEMPORAL_TLS_CERT and GIANTFLOW_TEMPORAL_TLS_KEY"):
        Settings(temporal_tls_cert=cert)
    with pytest.raises(ValidationError, match=r"GIANTFLOW_TEMPORAL_TLS_KEY: cannot read .*missing\.key"):
        Settings(temporal_tls_cert=cert, temporal_tls_key=tmp_path / "missing.key")
    with pytest.raises(ValidationError, match="GIANTFLOW_TEMPORAL_TLS_CA: cannot read"):
        Settings(temporal_tls_ca=tmp_path)  # a folder


def test_the_command_stops_at_start_up_naming_the_setting(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "GIANTFLOW_TEMPORAL_TLS_CA": str(tmp_path / "nowhere.pem")}
    done = subprocess.run(
        [str(BIN_DIR / "giantflow"), "temporal-setup"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "GIANTFLOW_TEMPORAL_TLS_CA: cannot read" in done.stderr
    assert "nowhere.pem" in done.stderr
