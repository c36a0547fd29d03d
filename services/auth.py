"""Bearer JWT authentication: HS256 with the configured secret in development, RS256 via JWKS with OIDC."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.config import Settings
from services.errors import Forbidden, Unauthorized
from services.vocabulary import Level, covers_region


class Role(StrEnum):
    enterprise = "enterprise"
    reviewer = "reviewer"
    finance = "finance"
    admin = "admin"
    expert = "expert"  # a panel expert (services/applications/panels.py): its assignments only


GroupName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]


class CurrentUser(BaseModel):
    """The authenticated caller, built from the token's claims."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: str = Field(min_length=1, max_length=200)
    role: Role
    uscc: str | None = Field(default=None, pattern=r"^[0-9A-HJ-NP-RTUWXY]{18}$")
    level: Level | None = None
    region: str | None = Field(default=None, pattern=r"^\d{6}$")
    name: str | None = None
    # Reviewer groups (e.g. a program's backup group, which escalated tasks go to): membership, not tenancy,
    # so not part of `identity`.
    groups: tuple[GroupName, ...] = Field(default=(), max_length=50)
    expert_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")

    @model_validator(mode="after")
    def _claims_for_role(self) -> CurrentUser:
        if self.role is Role.enterprise and self.uscc is None:
            raise ValueError("an enterprise token needs a `uscc` claim")
        if self.role is Role.reviewer and (self.level is None or self.region is None):
            raise ValueError("a reviewer token needs `level` and `region` claims")
        if self.role is Role.expert and self.expert_id is None:
            raise ValueError("an expert token needs an `expert_id` claim")
        return self

    def covers_region(self, region_code: str) -> bool:
        """A reviewer's region covers a code: ...0000 its province, ..00 its city, else exactly."""
        return covers_region(self.region, region_code)

    @property
    def identity(self) -> str:
        """The caller's whole identity - role, `sub` and the tenant claims that scope what it may touch - as
        one opaque key (64 hex digits). Whatever a caller leaves behind for a later request to find (a stored
        idempotent response, an Update id) belongs to this, never to `sub` alone: two identity providers, or
        a careless one, may give an enterprise and a reviewer, or two enterprises, the same `sub`."""
        claims: tuple[str, ...] = (
            self.role.value,
            self.sub,
            self.uscc or "",
            self.level or "",
            self.region or "",
        )
        if self.expert_id is not None:
            claims = (*claims, self.expert_id)
        return hashlib.sha256("\x1f".join(claims).encode()).hexdigest()

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise Forbidden(f"This action needs the role {' or '.join(r.value for r in roles)}.")


def role_check(*roles: Role) -> Callable[[CurrentUser], Awaitable[None]]:
    """An ``authorize`` step (``services.idempotency.once``) that needs nothing but one of ``roles``."""

    async def check(user: CurrentUser) -> None:
        user.require(*roles)

    return check


class TokenVerifier:
    """Verifies bearer tokens. One instance lives on the app for its lifetime."""

    JWKS_TTL = 300.0
    # Verified tokens are remembered (until they expire, and for at most CACHE_TTL) so a client's every
    # request does not pay for the signature check and claim validation again. Bounded, least recently used.
    CACHE_SIZE = 4096
    CACHE_TTL = 300.0

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._http = http
        self._jwks: dict[str, Any] = {}
        self._jwks_fetched = 0.0
        self._verified: OrderedDict[str, tuple[CurrentUser, float]] = OrderedDict()

    @property
    def oidc(self) -> bool:
        return self._settings.oidc_jwks_url is not None

    async def _jwks_keys(self, *, refresh: bool = False) -> dict[str, Any]:
        stale = time.monotonic() - self._jwks_fetched > self.JWKS_TTL
        if refresh or stale or not self._jwks:
            assert self._settings.oidc_jwks_url is not None
            if self._http is None:
                raise Unauthorized("The identity provider's keys cannot be fetched.")
            try:
                resp = await self._http.get(self._settings.oidc_jwks_url, timeout=5.0)
                resp.raise_for_status()
                keys = resp.json()["keys"]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                raise Unauthorized("The identity provider's keys are unavailable.") from exc
            self._jwks = {k["kid"]: jwt.PyJWK(k).key for k in keys if "kid" in k}
            self._jwks_fetched = time.monotonic()
        return self._jwks

    def remembered(self, token: str) -> CurrentUser | None:
        """The caller of a token this verifier has verified and remembers, still unexpired; else None."""
        cached = self._verified.get(token)
        if cached is None:
            return None
        user, until = cached
        if time.time() >= until:
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        return user

    async def verify(self, token: str) -> CurrentUser:
        user = self.remembered(token)
        if user is not None:
            return user
        user, expires = await self._verify(token)
        self._verified[token] = (user, min(expires, time.time() + self.CACHE_TTL))
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return user

    async def _verify(self, token: str) -> tuple[CurrentUser, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The bearer token is malformed.") from exc
        options: jwt.types.Options = {"require": ["exp", "sub"]}
        try:
            if self.oidc:
                if header.get("alg") != "RS256":
                    raise Unauthorized("Only RS256 tokens from the identity provider are accepted.")
                kid = header.get("kid")
                keys = await self._jwks_keys()
                if kid not in keys:
                    keys = await self._jwks_keys(refresh=True)
                if kid not in keys:
                    raise Unauthorized("The token was signed by an unknown key.")
                claims = jwt.decode(
                    token,
                    keys[kid],
                    algorithms=["RS256"],
                    audience=self._settings.oidc_audience,
                    issuer=self._settings.oidc_issuer,
                    options=options,
                )
            else:
                if header.get("alg") != "HS256":
                    raise Unauthorized("Only HS256 tokens are accepted.")
                claims = jwt.decode(
                    token, self._settings.jwt_secret.get_secret_value(), algorithms=["HS256"], options=options
                )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The bearer token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The bearer token is not valid: {exc}.") from exc
        try:
            return CurrentUser.model_validate(claims), float(claims["exp"])
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or e["msg"] for e in exc.errors())
            raise Unauthorized(f"The token's claims are not valid ({fields}).") from exc


def default_sub(
    role: Role, *, uscc: str | None = None, level: str | None = None, region: str | None = None
) -> str:
    """The development token's `sub` when none is given: one per identity, never shared between tenants."""
    if role is Role.enterprise and uscc:
        return f"enterprise-{uscc}"
    if role is Role.reviewer and level and region:
        return f"reviewer-{level}-{region}"
    return f"{role.value}-1"


def issue_development_token(
    settings: Settings,
    *,
    role: Role,
    sub: str,
    ttl: timedelta = timedelta(hours=12),
    **claims: str | list[str] | None,
) -> str:
    """A development HS256 token signed with the configured secret (`giantflow token`)."""
    now = datetime.now(UTC)
    payload: dict[str, Any] = {
        "sub": sub,
        "role": role.value,
        "iat": now,
        "exp": now + ttl,
        **{k: v for k, v in claims.items() if v is not None},
    }
    CurrentUser.model_validate({**payload, "role": role})
    return jwt.encode(payload, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def public_jwks(public_key: Any, kid: str) -> dict[str, Any]:
    """The JWKS document for one RSA public key (used by tests and local OIDC set-ups)."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public_key))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return {"keys": [jwk]}
