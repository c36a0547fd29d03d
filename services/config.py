"""The one Settings object. Every value comes from the environment with the prefix ``GIANTFLOW_``."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEVELOPMENT_JWT_SECRET = "giantflow-development-secret-do-not-use-in-production"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GIANTFLOW_", env_file=None, extra="ignore", env_ignore_empty=True
    )

    environment: Environment = Environment.development
    # None means "the embedded PostgreSQL server that `giantflow dev` starts in data_dir/postgres".
    database_url: str | None = None
    embedded_postgres_port: int = 5433
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "giantflow"
    temporal_ui_port: int = 8233
    # A Temporal cluster beyond the dev server (services/resources.py, connect_temporal): TLS with the
    # system's CAs (temporal_tls), or with a CA of its own, a server name to verify, and a client pair for
    # mTLS (cert and key, both or neither); any of these turns TLS on. An API key (Temporal Cloud) is sent as
    # a bearer token, over TLS too. How long a stopping worker lets its activities in flight finish.
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: SecretStr | None = None
    worker_shutdown_seconds: float = Field(default=50, ge=0)
    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    oidc_jwks_url: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    # The staff console's sign-in (services/console): the OpenID Connect client registered for it at the
    # issuer (authorization code with PKCE; the secret only for a confidential client), and the key its
    # session cookies are signed with - outside development both are needed for anyone to sign in.
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    console_secret: SecretStr | None = None
    programs_dir: Path = PROJECT_ROOT / "programs"
    bank_url: str = "http://127.0.0.1:8100"
    data_dir: Path = PROJECT_ROOT / "var"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    max_upload_bytes: int = 10 * 1024 * 1024
    write_rate_per_minute: int = 600
    # Where the public reaches this API (scheme, host, any path before /api/v1): the QR code and link on a
    # certificate point at {public_base_url}/api/v1/public/recognitions/{certificate_no}.
    public_base_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8000")
    # Requests one client address may make per minute to the unauthenticated /public routes.
    public_rate_per_minute: int = Field(default=120, ge=1)
    # Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the client; none
    # by default: a client is the socket peer.
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    # Allocations between collections of the youngest generation in `giantflow api` (CPython's default
    # is 700); see services/runtime.py.
    gc_gen0_threshold: int = Field(default=10_000, ge=100)
    # Notifications (services/notifications): how long a webhook call may take, how long a delivery is
    # retried before it is dead-lettered, whether endpoints may be loopback or private addresses (never in
    # production; by default only in development), and how many calls the relay makes at once.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_for: timedelta = timedelta(days=3)
    webhook_allow_private: bool | None = None
    relay_concurrency: int = Field(default=32, ge=1, le=500)
    # E-mail (services/notifications/mail.py), sent by the relay with the webhooks' backoff and dead-letter
    # window: the SMTP server (no host: mail is off; `giantflow dev` points its parts at a local sink that
    # keeps every message in data_dir/mail, on mail_sink_port or a free port), its login, STARTTLS (true:
    # required, false: never, unset: when the server offers it), the sender, how long one SMTP step may take.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool | None = None
    smtp_from: str = "giantflow <noreply@giantflow.localhost>"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    mail_sink_port: int | None = Field(default=None, ge=1, le=65535)
    # The wait before a failed delivery's first retry (doubled each attempt, at most six hours, jittered);
    # short only for test and chaos runs against receivers that fail on purpose.
    webhook_first_retry_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Whether `giantflow worker` runs a relay too; false when relays run apart (`giantflow relay`).
    worker_relay: bool = True
    # Where evidence content lives (services/storage.py): `local`, the folder data_dir/documents (one host,
    # or replicas sharing it), or `s3`, a bucket of any S3-compatible server (no endpoint: AWS; MinIO: its
    # URL) under keys s3_prefix + ab/abcdef...; no key id: the AWS default chain (environment, profile, role).
    storage_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = "documents/"
    # Observability (services/metrics.py, services/telemetry.py). With a metrics port, `giantflow api` and
    # `giantflow worker` each serve Prometheus' /metrics on metrics_host:metrics_port (the worker's includes
    # the Temporal SDK's own metrics), never on the API's port; without one, the API serves /metrics on its
    # own port in development and test only, and the worker serves none. Traces go by OTLP/HTTP to
    # otlp_endpoint (e.g. http://otel-collector:4318); tracing is on when an endpoint is set, unless false.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    otlp_endpoint: str | None = None
    tracing: bool | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())
        return value

    @field_validator("smtp_from")
    @classmethod
    def _sender(cls, value: str) -> str:
        """``address`` or ``Name <address>``, the address one mail can be sent from."""
        from email.headerregistry import Address
        from email.utils import parseaddr

        from services.identifiers import validate_email

        name, address = parseaddr(value)
        if not address:
            raise ValueError(f"{value!r} is not an address, nor Name <address>")
        return str(Address(display_name=name, addr_spec=validate_email(address)))

    @model_validator(mode="after")
    def _storage_needs_a_bucket(self) -> Settings:
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("GIANTFLOW_S3_BUCKET is required when GIANTFLOW_STORAGE_BACKEND is s3")
        return self

    @property
    def public_url(self) -> str:
        """``public_base_url`` without a trailing slash."""
        return str(self.public_base_url).rstrip("/")

    @model_validator(mode="after")
    def _refuse_development_secret(self) -> Settings:
        if (
            self.environment is not Environment.development
            and self.oidc_jwks_url is None
            and self.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
        ):
            raise ValueError(
                "GIANTFLOW_JWT_SECRET is the development default; set a real secret "
                "or GIANTFLOW_OIDC_JWKS_URL outside development"
            )
        if self.environment is Environment.production and self.oidc_jwks_url is not None:
            if not (self.oidc_issuer and self.oidc_audience):
                raise ValueError("GIANTFLOW_OIDC_ISSUER and GIANTFLOW_OIDC_AUDIENCE are required with OIDC")
        return self

    @model_validator(mode="after")
    def _temporal_tls_files(self) -> Settings:
        """The mTLS pair comes whole, and every TLS file can be read at start-up, not at the first call."""
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError("GIANTFLOW_TEMPORAL_TLS_CERT and GIANTFLOW_TEMPORAL_TLS_KEY go together")
        for name in ("temporal_tls_cert", "temporal_tls_key", "temporal_tls_ca"):
            path: Path | None = getattr(self, name)
            if path is None:
                continue
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"GIANTFLOW_{name.upper()}: cannot read {path}: {exc.strerror}") from None
        return self

    @property
    def temporal_uses_tls(self) -> bool:
        """Whether the connection to Temporal is TLS: asked for, or implied by a TLS file or server name (an
        API key alone implies it too, by the SDK's rule)."""
        return self.temporal_tls or any(
            value is not None
            for value in (self.temporal_tls_cert, self.temporal_tls_ca, self.temporal_tls_server_name)
        )

    @property
    def webhooks_may_reach_private(self) -> bool:
        """Whether webhook endpoints may resolve to loopback, private or link-local addresses: as set, else
        only in development; never in production."""
        if self.environment is Environment.production:
            return False
        if self.webhook_allow_private is not None:
            return self.webhook_allow_private
        return self.environment is Environment.development

    @property
    def tracing_enabled(self) -> bool:
        """Whether spans are made (and exported, with an OTLP endpoint): as set, else with an endpoint."""
        return self.tracing if self.tracing is not None else self.otlp_endpoint is not None

    @property
    def mail_enabled(self) -> bool:
        """Whether events are e-mailed: when an SMTP host is set (`giantflow dev` sets its sink's)."""
        return bool(self.smtp_host)

    @property
    def console_signing_key(self) -> bytes | None:
        """The key the console signs its session cookies with: ``console_secret``; in development, when it
        is not set, one derived from the JWT secret. None: nobody can sign in to the console."""
        if self.console_secret is not None:
            return self.console_secret.get_secret_value().encode()
        if self.environment is Environment.development:
            return hashlib.sha256(
                b"giantflow-console\x1f" + self.jwt_secret.get_secret_value().encode()
            ).digest()
        return None

    @property
    def embedded_database_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.embedded_postgres_port}/giantflow"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or self.embedded_database_url

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    return Settings()
