"""Bearer tokens: HS256 in development, RS256 through a JWKS in OIDC mode; every bad token is a 401."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from services.auth import CurrentUser, Role, TokenVerifier, public_jwks
from services.config import DEVELOPMENT_JWT_SECRET, Environment, Settings
from services.errors import Unauthorized
from tests.conftest import TEST_SECRET, make_token


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(**extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"sub": "u1", "role": "finance", "iat": now, "exp": now + timedelta(minutes=5), **extra}


@pytest.fixture
def hs_verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier(settings)


async def test_a_good_hs256_token_becomes_the_current_user(
    hs_verifier: TokenVerifier, settings: Settings
) -> None:
    token = make_token(settings, Role.reviewer, "r1", level="municipal", region="500100")
    user = await hs_verifier.verify(token)
    assert user == CurrentUser(sub="r1", role=Role.reviewer, level="municipal", region="500100")
    assert user.covers_region("500103")
    assert not user.covers_region("500203")


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong_secret",
        "alg_none",
        "malformed",
        "no_exp",
        "bad_role",
        "enterprise_without_uscc",
        "rs256_with_hs_key",
    ],
)
async def test_bad_tokens_are_refused(hs_verifier: TokenVerifier, case: str) -> None:
    if case == "expired":
        token = jwt.encode(
            _claims(exp=datetime.now(UTC) - timedelta(seconds=5)), TEST_SECRET, algorithm="HS256"
        )
    elif case == "wrong_secret":
        token = jwt.encode(_claims(), "another-secret-of-sufficient-length-000", algorithm="HS256")
    elif case == "alg_none":
        header, body = (
            _b64({"alg": "none", "typ": "JWT"}),
            _b64({"sub": "u1", "role": "admin", "exp": 9999999999}),
        )
        token = f"{header}.{body}."
    elif case == "malformed":
        token = "not.a.token"
    elif case == "no_exp":
        claims = _claims()
        del claims["exp"]
        token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    elif case == "bad_role":
        token = jwt.encode(_claims(role="root"), TEST_SECRET, algorithm="HS256")
    elif case == "enterprise_without_uscc":
        token = jwt.encode(_claims(role="enterprise"), TEST_SECRET, algorithm="HS256")
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(_claims(), key, algorithm="RS256")
    with pytest.raises(Unauthorized):
        await hs_verifier.verify(token)


async def test_problem_401_over_http(api_rollback: httpx.AsyncClient) -> None:
    missing = await api_rollback.get("/api/v1/applications")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    bad = await api_rollback.get("/api/v1/applications", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401


class TestOidc:
    ISSUER = "https://idp.example.test/"
    AUDIENCE = "giantflow"

    @pytest.fixture
    def key(self) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @pytest.fixture
    def verifier(self, key: rsa.RSAPrivateKey) -> TokenVerifier:
        jwks = public_jwks(key.public_key(), "k1")
        calls: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(str(request.url))
            return httpx.Response(200, json=jwks)

        settings = Settings(
            environment=Environment.production,
            oidc_jwks_url="https://idp.example.test/jwks",
            oidc_issuer=self.ISSUER,
            oidc_audience=self.AUDIENCE,
        )
        return TokenVerifier(settings, httpx.AsyncClient(transport=httpx.MockTransport(handler)))

    def token(self, key: Any, *, alg: str = "RS256", kid: str = "k1", **claims: Any) -> str:
        payload = _claims(**{"iss": self.ISSUER, "aud": self.AUDIENCE, **claims})
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})

    async def test_rs256_token_from_the_jwks_is_accepted(
        self, verifier: TokenVerifier, key: rsa.RSAPrivateKey
    ) -> None:
        user = await verifier.verify(self.token(key, role="admin"))
        assert user.role is Role.admin

    @pytest.mark.parametrize(
        "case", ["wrong_issuer", "wrong_audience", "unknown_kid", "hs256_confusion", "other_key"]
    )
    async def test_refused(self, verifier: TokenVerifier, key: rsa.RSAPrivateKey, case: str) -> None:
        if case == "wrong_issuer":
            token = self.token(key, iss="https://evil.test/")
        elif case == "wrong_audience":
            token = self.token(key, aud="someone-else")
        elif case == "unknown_kid":
            token = self.token(key, kid="k2")
        elif case == "hs256_confusion":
            token = jwt.encode(
                _claims(iss=self.ISSUER, aud=self.AUDIENCE),
                "public-key-as-secret-000000000000",
                algorithm="HS256",
                headers={"kid": "k1"},
            )
        else:
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            token = self.token(other)
        with pytest.raises(Unauthorized):
            await verifier.verify(token)


def test_development_secret_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="development default"):
        Settings(environment=Environment.production, jwt_secret=DEVELOPMENT_JWT_SECRET)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="development default"):
        Settings(environment=Environment.test)
    assert (
        Settings(environment=Environment.development).jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
    )


def test_oidc_needs_issuer_and_audience() -> None:
    with pytest.raises(ValidationError, match="ISSUER"):
        Settings(environment=Environment.production, oidc_jwks_url="https://idp.example.test/jwks")


async def test_a_verified_token_is_remembered_only_until_it_expires(settings: Settings) -> None:
    import asyncio
    import time

    verifier = TokenVerifier(settings)
    token = jwt.encode(
        {"sub": "admin-1", "role": "admin", "exp": int(time.time()) + 2},
        settings.jwt_secret.get_secret_value(),
        algorithm="HS256",
    )
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # the second check is answered from the cache
    while time.time() < first_exp(token) + 0.05:
        await asyncio.sleep(0.1)
    with pytest.raises(Unauthorized, match="expired"):
        await verifier.verify(token)


def first_exp(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def test_the_token_cache_is_bounded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TokenVerifier, "CACHE_SIZE", 3)
    verifier = TokenVerifier(settings)
    tokens = [make_token(settings, "admin", f"admin-{n}") for n in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert list(verifier._verified) == tokens[2:]


def test_the_identity_is_the_whole_set_of_claims_not_the_sub() -> None:
    """What a caller leaves behind (an idempotent answer, an Update id) is keyed by this: two tenants with
    one `sub` never share it."""
    a = CurrentUser(sub="enterprise-1", role=Role.enterprise, uscc="91350100M000100Y43")
    b = CurrentUser(sub="enterprise-1", role=Role.enterprise, uscc="91500230MA5UABCD1X")
    reviewer = CurrentUser(sub="enterprise-1", role=Role.reviewer, level="municipal", region="500200")
    other_region = CurrentUser(sub="enterprise-1", role=Role.reviewer, level="municipal", region="500100")
    finance = CurrentUser(sub="enterprise-1", role=Role.finance)
    identities = {u.identity for u in (a, b, reviewer, other_region, finance)}
    assert len(identities) == 5
    assert a.identity == CurrentUser(sub="enterprise-1", role=Role.enterprise, uscc=a.uscc, name="x").identity
    assert len(a.identity) <= 200  # fits the idempotency table's caller column


def test_giantflow_token_gives_each_identity_its_own_sub(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from services.cli import app
    from services.config import get_settings

    monkeypatch.setenv("GIANTFLOW_ENVIRONMENT", "development")
    get_settings.cache_clear()
    try:
        runner = CliRunner()

        def sub_of(*args: str) -> str:
            result = runner.invoke(app, ["token", *args])
            assert result.exit_code == 0, result.output
            claims = jwt.decode(result.output.strip(), options={"verify_signature": False})
            return str(claims["sub"])

        a = sub_of("--role", "enterprise", "--uscc", "91350100M000100Y43")
        b = sub_of("--role", "enterprise", "--uscc", "91500230MA5UABCD1X")
        municipal = sub_of("--role", "reviewer", "--level", "municipal", "--region", "500200")
        provincial = sub_of("--role", "reviewer", "--level", "provincial", "--region", "500000")
        assert len({a, b, municipal, provincial}) == 4
        assert sub_of("--role", "enterprise", "--uscc", "91350100M000100Y43", "--sub", "me") == "me"
    finally:
        get_settings.cache_clear()
