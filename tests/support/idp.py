"""A small but honest OpenID Connect provider for tests: one registered client and one preconfigured user.

- ``GET /.well-known/openid-configuration``: the discovery document (issuer, endpoints, what it supports);
- ``GET /authorize``: the authorization-code grant with PKCE (S256 only). The client and its exact
  ``redirect_uri`` must be registered (otherwise a 400 here, never a redirect to an unknown address); it
  issues a one-time code bound to the client, the redirect URI and the code challenge, valid for a minute,
  and redirects back with it and the client's ``state``;
- ``POST /token``: authenticates the client (HTTP Basic with its secret when it has one, else its
  ``client_id``), takes the code once (a second use is ``invalid_grant``, whatever else it carries), checks
  the redirect URI and the PKCE verifier against the challenge, and returns an RS256 access token with the
  user's claims (role, sub, level, region, groups, iss, aud, exp), signed with its RSA key, and an ID token;
- ``GET /jwks``: the public key (``services.auth.public_jwks``).

``serve(provider)`` runs it for real: uvicorn in a background thread on a free port."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from devtools.devstack import free_port
from services.auth import public_jwks
from tests.support.servers import loopback_server

CODE_LIFETIME = 60.0
TOKEN_LIFETIME = 300


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@dataclass
class Grant:
    """An authorization code's binding: who it was issued to, for which redirect and challenge."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    expires: float


@dataclass
class IdentityProvider:
    client_id: str
    redirect_uri: str
    audience: str
    user: dict[str, Any]  # the signed-in user's claims: sub, role and its scope claims
    client_secret: str | None = None
    port: int = field(default_factory=free_port)
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = field(default_factory=lambda: secrets.token_hex(8))
    codes: dict[str, Grant] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # every code ever issued (tests look at them)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic" if self.client_secret else "none"
            ],
        }

    def authorize(self, params: dict[str, str | None]) -> Response:
        if params.get("client_id") != self.client_id or params.get("redirect_uri") != self.redirect_uri:
            # Never redirect to an address not registered for this client.
            return JSONResponse({"error": "invalid_request", "error_description": "unknown client"}, 400)
        state = params.get("state")

        def back(**answer: str) -> Response:
            query = {**answer, **({"state": state} if state else {})}
            return RedirectResponse(f"{self.redirect_uri}?{urlencode(query)}", status_code=302)

        challenge = params.get("code_challenge") or ""
        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if params.get("code_challenge_method") != "S256" or len(challenge) != 43:
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        if "openid" not in (params.get("scope") or "").split():
            return back(error="invalid_scope")
        code = secrets.token_urlsafe(32)
        with self.lock:
            self.codes[code] = Grant(
                client_id=self.client_id,
                redirect_uri=self.redirect_uri,
                code_challenge=challenge,
                scope=params.get("scope") or "",
                expires=time.time() + CODE_LIFETIME,
            )
            self.issued.append(code)
        return back(code=code)

    def _client(self, request: Request, client_id: str | None) -> str | None:
        """The authenticated client's id, or None."""
        if self.client_secret is None:
            return client_id if client_id == self.client_id else None
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            name, _, secret = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if name == self.client_id and secrets.compare_digest(secret, self.client_secret):
            return name
        return None

    def token(
        self,
        request: Request,
        *,
        grant_type: str,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        client_id: str | None,
    ) -> Response:
        client = self._client(request, client_id)
        if client is None:
            return JSONResponse({"error": "invalid_client"}, 401, headers={"WWW-Authenticate": "Basic"})
        if grant_type != "authorization_code":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        with self.lock:
            grant = self.codes.pop(code, None)  # once: taken whether or not the rest checks out
        refused = JSONResponse({"error": "invalid_grant"}, 400)
        if grant is None or grant.expires < time.time() or grant.client_id != client:
            return refused
        if redirect_uri != grant.redirect_uri:
            return refused
        if not code_verifier or not secrets.compare_digest(s256(code_verifier), grant.code_challenge):
            return refused
        now = int(time.time())
        claims = {
            **self.user,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        access = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        identity = {
            "iss": self.issuer,
            "sub": self.user["sub"],
            "aud": self.client_id,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        id_token = jwt.encode(identity, self.key, algorithm="RS256", headers={"kid": self.kid})
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "id_token": id_token,
                "scope": grant.scope,
            },
            headers={"Cache-Control": "no-store"},
        )

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict[str, Any]:
            return self.discovery()

        @app.get("/authorize")
        async def authorize(
            response_type: Annotated[str | None, Query()] = None,
            client_id: Annotated[str | None, Query()] = None,
            redirect_uri: Annotated[str | None, Query()] = None,
            scope: Annotated[str | None, Query()] = None,
            state: Annotated[str | None, Query()] = None,
            code_challenge: Annotated[str | None, Query()] = None,
            code_challenge_method: Annotated[str | None, Query()] = None,
        ) -> Response:
            return self.authorize(
                {
                    "response_type": response_type,
                    "client_id": client_id,
                    "redirect_uri": redirect_uri,
                    "scope": scope,
                    "state": state,
                    "code_challenge": code_challenge,
                    "code_challenge_method": code_challenge_method,
                }
            )

        @app.post("/token")
        async def token(
            request: Request,
            grant_type: Annotated[str, Form()] = "",
            code: Annotated[str, Form()] = "",
            redirect_uri: Annotated[str, Form()] = "",
            code_verifier: Annotated[str, Form()] = "",
            client_id: Annotated[str | None, Form()] = None,
        ) -> Response:
            return self.token(
                request,
                grant_type=grant_type,
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier,
                client_id=client_id,
            )

        @app.get("/jwks")
        async def jwks() -> dict[str, Any]:
            return public_jwks(self.key.public_key(), self.kid)

        return app


@contextmanager
def serve(provider: IdentityProvider) -> Iterator[IdentityProvider]:
    """The provider as a real HTTP server (uvicorn in a background thread) at ``provider.issuer``."""
    server = loopback_server(provider.app(), provider.port)
    thread = threading.Thread(target=server.run, name="test-idp", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the identity provider did not start"
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(timeout=10)
