"""Signing in to the console.

In production: OpenID Connect, authorization code with PKCE (S256), against a real provider
(tests/support/idp.py, uvicorn on a free port): the console redirects to its authorize endpoint, the code
comes back to /console/auth/callback, the console exchanges it with the PKCE verifier only it holds and
verifies the access token as the API verifies a bearer token. A forged state, a replayed code and a code
from another sign-in are refused with an error page and no session; the development form does not exist.

In development: the sign-in form (labelled fields, errors next to them), signing out (CSRF), the language
switch and negotiation, the console's 404 page, and redirects that never leave the console. And every
message the console shows has its zh-CN translation."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.devstack import free_port
from services.app import create_app
from services.auth import Role
from services.config import Environment, Settings
from services.console import session as sessions
from services.console import signin, web
from services.resources import Resources, connect_temporal
from tests.conftest import CONSOLE_SECRET, TEST_SECRET
from tests.support.idp import IdentityProvider, s256, serve
from tests.support.resources import borrowing

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONSOLE = PROJECT_ROOT / "services" / "console"
CLIENT_ID = "giantflow-console"
CLIENT_SECRET = "console-client-secret-for-tests"
AUDIENCE = "giantflow"
CALLBACK = "http://testserver/console/auth/callback"
ADMIN = {"sub": "admin-oidc-1", "role": "admin", "groups": ["giantflow-admins"]}
LABEL = re.compile(r'<label for="([^"]+)">([^<]+)</label>')


@asynccontextmanager
async def running(settings: Settings, engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    """The giantflow app with `settings` on the test database (Temporal unreachable: no page here needs it),
    its outbound HTTP client a real one (it reaches the identity provider)."""
    http = httpx.AsyncClient()

    async def factory(s: Settings) -> Resources:
        unreachable = s.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
        return borrowing(s, engine, await connect_temporal(unreachable), http)

    app = create_app(settings, resources_factory=factory)
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        await http.aclose()


def session_cookies(response: httpx.Response) -> list[str]:
    """The Set-Cookie headers that set a console session (a deletion sets an empty value)."""
    return [
        header
        for header in response.headers.get_list("set-cookie")
        if header.startswith(f"{sessions.COOKIE}=")
        and not header.startswith(f'{sessions.COOKIE}=""')
        and not header.startswith(f"{sessions.COOKIE}=;")
    ]


def attributes(set_cookie: str) -> set[str]:
    return {part.strip().lower() for part in set_cookie.split(";")[1:]}


# --- production: OpenID Connect ----------------------------------------------------------------------------


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=CALLBACK,
        audience=AUDIENCE,
        user=dict(ADMIN),
    )
    with serve(provider):
        yield provider


@pytest.fixture
def production(idp: IdentityProvider, migrated: str, tmp_path: Path) -> Settings:
    return Settings(
        environment=Environment.production,
        database_url=migrated,
        oidc_jwks_url=f"{idp.issuer}/jwks",
        oidc_issuer=idp.issuer,
        oidc_audience=AUDIENCE,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        console_secret=CONSOLE_SECRET,
        public_base_url="http://testserver",
        data_dir=tmp_path,
        log_json=True,
        log_level="WARNING",
    )


@pytest.fixture
async def console(production: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on the production console. HTTPS, as a browser reaches it there: its cookies are Secure."""
    async with running(production, engine) as app:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://testserver"
        ) as client:
            yield client


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """The same browser's requests to the identity provider: over real HTTP, redirects not followed."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


async def start(
    console: httpx.AsyncClient, browser: httpx.AsyncClient, idp: IdentityProvider, **query: str
) -> tuple[dict[str, str], str, str]:
    """/console/login -> the provider's authorize -> back with a code: (the authorize URL's query, the code,
    the state the provider sent back)."""
    login = await console.get("/console/login", params=query)
    assert login.status_code == 303, login.text
    authorize = login.headers["location"]
    assert authorize.startswith(f"{idp.issuer}/authorize?")
    asked = {name: values[0] for name, values in parse_qs(urlsplit(authorize).query).items()}
    back = await browser.get(authorize)
    assert back.status_code == 302, back.text
    location = back.headers["location"]
    assert location.startswith(CALLBACK + "?")
    answer = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
    return asked, answer["code"], answer["state"]


async def test_oidc_sign_in_with_pkce_lands_on_the_roles_home_page(
    console: httpx.AsyncClient, browser: httpx.AsyncClient, idp: IdentityProvider
) -> None:
    asked, code, state = await start(console, browser, idp, next="https://evil.example/console/")
    assert asked["response_type"] == "code"
    assert asked["client_id"] == CLIENT_ID
    assert asked["redirect_uri"] == CALLBACK
    assert asked["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", asked["code_challenge"])
    assert asked["state"] == state
    assert len(state) >= 20
    assert "openid" in asked["scope"].split()
    assert idp.codes[code].code_challenge == asked["code_challenge"]
    # The pending sign-in (state, PKCE verifier, next) is a signed cookie of the console's, HttpOnly, Secure.
    assert console.cookies.get(signin.OIDC_COOKIE)

    callback = await console.get("/console/auth/callback", params={"code": code, "state": state})
    assert callback.status_code == 303, callback.text
    # next=https://evil.example/... was not followed: the admin's home page inside the console.
    assert callback.headers["location"] == web.home_for(Role.admin)
    (cookie,) = session_cookies(callback)
    assert {"httponly", "secure", "samesite=lax", "path=/console"} <= attributes(cookie)
    assert code not in idp.codes  # exchanged, and gone

    page = await console.get("/console/programs")
    assert page.status_code == 200
    assert "退出" in page.text
    assert "admin-oidc-1" in page.text
    # The same claims as a bearer token: the session holds what the provider's access token said.
    value = console.cookies.get(sessions.COOKIE)
    assert value is not None
    session = sessions.decode(console._transport.app.state.resources.settings, value)  # type: ignore[attr-defined]
    assert session.user.role is Role.admin
    assert session.user.groups == ("giantflow-admins",)


async def test_a_forged_state_is_refused_and_the_code_is_never_exchanged(
    console: httpx.AsyncClient, browser: httpx.AsyncClient, idp: IdentityProvider
) -> None:
    _, code, _ = await start(console, browser, idp)
    refused = await console.get("/console/auth/callback", params={"code": code, "state": "forged-state"})
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("text/html")
    assert "登录未完成" in refused.text
    assert session_cookies(refused) == []
    assert code in idp.codes  # the console did not even try it
    assert (await console.get("/console/programs")).status_code == 303  # still signed out


async def test_a_replayed_code_is_refused(
    console: httpx.AsyncClient, browser: httpx.AsyncClient, idp: IdentityProvider
) -> None:
    _, code, state = await start(console, browser, idp)
    pending = console.cookies.get(signin.OIDC_COOKIE)
    assert pending
    first = await console.get("/console/auth/callback", params={"code": code, "state": state})
    assert first.status_code == 303
    assert session_cookies(first)

    # The same callback again, with everything the first one carried (as an attacker who saw it would).
    app = console._transport.app  # type: ignore[attr-defined]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://testserver",
        cookies={signin.OIDC_COOKIE: pending},
    ) as replay:
        again = await replay.get("/console/auth/callback", params={"code": code, "state": state})
        assert again.status_code == 401
        assert "身份认证服务未接受此次登录" in again.text
        assert session_cookies(again) == []
        assert (await replay.get("/console/programs")).status_code == 303


async def test_a_code_from_another_sign_in_fails_its_pkce_check(
    console: httpx.AsyncClient, browser: httpx.AsyncClient, idp: IdentityProvider
) -> None:
    """A code issued to one sign-in (its challenge) and injected into another (its state, its verifier)."""
    app = console._transport.app  # type: ignore[attr-defined]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://testserver"
    ) as other:
        _, stolen, _ = await start(other, browser, idp)
    _, _, state = await start(console, browser, idp)
    refused = await console.get("/console/auth/callback", params={"code": stolen, "state": state})
    assert refused.status_code == 401
    assert session_cookies(refused) == []


async def test_the_development_form_does_not_exist_in_production(console: httpx.AsyncClient) -> None:
    posted = await console.post(
        "/console/login",
        data={"role": "admin", "user_id": "intruder", "csrf_token": "x"},
        headers={"Origin": "https://testserver"},
    )
    assert posted.status_code == 404
    assert posted.headers["content-type"].startswith("text/html")
    assert session_cookies(posted) == []


async def test_the_identity_provider_is_honest(idp: IdentityProvider, browser: httpx.AsyncClient) -> None:
    """The provider the tests above trust checks what a real one checks."""
    discovery = (await browser.get(f"{idp.issuer}/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == idp.issuer
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    verifier = "v" * 64
    authorize = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": CALLBACK,
        "scope": "openid",
        "state": "s",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    elsewhere = await browser.get(
        discovery["authorization_endpoint"], params={**authorize, "redirect_uri": "https://evil.example/cb"}
    )
    assert elsewhere.status_code == 400  # never redirected to an address not registered
    plain = await browser.get(
        discovery["authorization_endpoint"], params={**authorize, "code_challenge_method": "plain"}
    )
    assert "error=invalid_request" in plain.headers["location"]

    async def code() -> str:
        answer = await browser.get(discovery["authorization_endpoint"], params=authorize)
        return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]

    def exchange(code: str, **changes: str) -> dict[str, str]:
        return {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
            **changes,
        }

    client = httpx.BasicAuth(CLIENT_ID, CLIENT_SECRET)
    token = discovery["token_endpoint"]
    wrong_verifier = await browser.post(
        token, data=exchange(await code(), code_verifier="w" * 64), auth=client
    )
    assert wrong_verifier.json() == {"error": "invalid_grant"}
    wrong_redirect = await browser.post(
        token, data=exchange(await code(), redirect_uri="http://testserver/other"), auth=client
    )
    assert wrong_redirect.json() == {"error": "invalid_grant"}
    wrong_secret = await browser.post(
        token, data=exchange(await code()), auth=httpx.BasicAuth(CLIENT_ID, "x")
    )
    assert wrong_secret.status_code == 401
    good = await code()
    issued = await browser.post(token, data=exchange(good), auth=client)
    assert issued.status_code == 200
    assert issued.json()["token_type"] == "Bearer"
    assert (await browser.post(token, data=exchange(good), auth=client)).json() == {"error": "invalid_grant"}


# --- development -------------------------------------------------------------------------------------------


@pytest.fixture
async def dev(migrated: str, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        environment=Environment.development,
        database_url=migrated,
        jwt_secret=TEST_SECRET,
        console_secret=CONSOLE_SECRET,
        public_base_url="http://testserver",
        data_dir=tmp_path,
        log_json=True,
        log_level="WARNING",
    )
    async with running(settings, engine) as app:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as c:
            yield c


async def dev_sign_in(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    form = await client.get("/console/login")
    # The sign-in form's own token (a signed-in page's Sign out form carries the session's first).
    tokens = re.findall(r'name="csrf_token" value="([^"]+)"', form.text)
    assert tokens, form.text
    return await client.post("/console/login", data={"csrf_token": tokens[-1], **fields})


async def test_the_development_form_has_a_label_for_every_field(dev: httpx.AsyncClient) -> None:
    page = await dev.get("/console/login", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    labels = {text.strip(): target for target, text in LABEL.findall(page.text)}
    for label, name in [
        ("Role", "role"),
        ("User id", "user_id"),
        ("Level", "level"),
        ("Region", "region"),
        ("USCC", "uscc"),
        ("Groups", "groups"),
    ]:
        assert label in labels, f"no label {label!r}"
        target = labels[label]
        assert re.search(rf'id="{target}" name="{name}"', page.text), f"{label} labels no field {name}"


async def test_a_reviewer_without_a_region_is_told_next_to_the_field(dev: httpx.AsyncClient) -> None:
    refused = await dev_sign_in(dev, role="reviewer", user_id="rev-1", level="provincial", region="")
    assert refused.status_code == 422
    assert session_cookies(refused) == []
    error = re.search(r'<p class="field-error" id="e-region">([^<]+)</p>', refused.text)
    assert error
    assert "region" in error.group(1)
    assert 'aria-describedby="e-region"' in refused.text
    assert 'value="rev-1"' in refused.text  # what was typed is kept


async def test_signing_in_and_out(dev: httpx.AsyncClient) -> None:
    signed_in = await dev_sign_in(dev, role="finance", user_id="fin-1")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == web.home_for(Role.finance)
    (cookie,) = session_cookies(signed_in)
    assert {"httponly", "samesite=lax", "path=/console"} <= attributes(cookie)
    assert "secure" not in attributes(cookie)  # development runs on plain http

    page = await dev.get("/console/programs")
    assert page.status_code == 200
    assert "fin-1" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf

    refused = await dev.post("/console/logout", headers={"Origin": "http://testserver"})
    assert refused.status_code == 403
    assert (await dev.get("/console/programs")).status_code == 200  # still signed in

    out = await dev.post(
        "/console/logout", data={"csrf_token": csrf.group(1)}, headers={"Origin": "http://testserver"}
    )
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    assert dev.cookies.get(sessions.COOKIE) is None
    gone = await dev.get("/console/programs")
    assert gone.status_code == 303
    assert gone.headers["location"].startswith("/console/login")


async def test_the_language_switch_and_negotiation(dev: httpx.AsyncClient) -> None:
    assert (await dev_sign_in(dev, role="admin", user_id="adm-1")).status_code == 303
    chinese = await dev.get("/console/programs")
    assert "退出" in chinese.text
    assert "Sign out" not in chinese.text
    assert '<html lang="zh-CN">' in chinese.text

    switched = await dev.get("/console/lang", params={"to": "en", "next": "/console/programs"})
    assert switched.status_code == 303
    assert switched.headers["location"] == "/console/programs"
    english = await dev.get("/console/programs")
    assert "Sign out" in english.text
    assert "退出" not in english.text
    assert '<html lang="en">' in english.text

    await dev.get("/console/lang", params={"to": "zh-CN", "next": "/console/programs"})
    assert "退出" in (await dev.get("/console/programs")).text

    dev.cookies.delete(web.LANG_COOKIE)
    asked = await dev.get("/console/programs", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert "Sign out" in asked.text
    assert "退出" in (await dev.get("/console/programs", headers={"Accept-Language": "zh-CN"})).text
    assert "退出" in (await dev.get("/console/programs")).text  # zh-CN when nothing is asked


async def test_an_unknown_console_path_is_an_html_404(dev: httpx.AsyncClient) -> None:
    missing = await dev.get("/console/xyz", headers={"Accept-Language": "en"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "Not found" in missing.text


@pytest.mark.parametrize("target", ["https://evil.example", "//evil.example/console", "/api/v1/programs"])
async def test_next_never_leaves_the_console(dev: httpx.AsyncClient, target: str) -> None:
    lang = await dev.get("/console/lang", params={"to": "en", "next": target})
    assert lang.status_code == 303
    assert lang.headers["location"] == "/console/"
    signed_in = await dev_sign_in(dev, role="admin", user_id="adm-2", next=target)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == web.home_for(Role.admin)
    inside = await dev_sign_in(dev, role="admin", user_id="adm-2", next="/console/programs?x=1")
    assert inside.headers["location"] == "/console/programs?x=1"


# --- translations ------------------------------------------------------------------------------------------

KEYWORDS: dict[str, None] = {"_": None, "gettext": None}


def console_msgids(method_map: list[tuple[str, str]], options: dict[str, dict[str, str]]) -> dict[str, str]:
    """Every msgid of the console's templates and Python, with where it is first used."""
    found: dict[str, str] = {}
    for filename, lineno, message, _, _ in extract_from_dir(
        str(CONSOLE), method_map, options_map=options, keywords=KEYWORDS
    ):
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, f"{filename}:{lineno}")
    return found


def test_every_console_message_has_a_zh_cn_translation() -> None:
    method_map = [("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
    options = {"templates/**.html": {"trim_blocks": "true", "lstrip_blocks": "true"}}
    msgids = console_msgids(method_map, options)
    assert "Sign out" in msgids
    assert "Revoke" in msgids
    chinese = web.translations("zh-CN")
    missing = {msgid: where for msgid, where in msgids.items() if chinese.gettext(msgid) == msgid}
    assert not missing, f"{len(missing)} msgids have no zh_CN translation:\n" + "\n".join(
        f"  {where}: {msgid!r}" for msgid, where in sorted(missing.items(), key=lambda item: item[1])
    )


def test_babel_cfg_extracts_the_same_messages() -> None:
    """`pybabel extract -F babel.cfg -o services/console/locale/messages.pot services/console` sees what the
    translation test checks."""
    with (PROJECT_ROOT / "babel.cfg").open() as config:
        method_map, options = parse_mapping_cfg(config, filename="babel.cfg")  # type: ignore[no-untyped-call]
    expected = console_msgids(
        [("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")],
        {"templates/**.html": {"trim_blocks": "true", "lstrip_blocks": "true"}},
    )
    assert set(console_msgids(method_map, options)) == set(expected)
