"""The per-process cache of checked tokens (fhir_server/auth/cache.py) keeps the security of the
token table within its documented bound: what another process revokes is refused after
`token_cache_seconds` at the latest, a revocation in this process at once, an entry never
outlives its token's `exp` nor serves another FHIR base; and over real worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import make_services, seed, wait_serving
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from smart import JWT_BEARER, assertion, auth_of

from fhir_server import cli
from fhir_server.auth import admin
from fhir_server.services import Parts
from fhir_server.settings import Settings

EMR = "emr"
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Li"}]}


def _backend_token(c: TestClient, key: ECKey) -> str:
    """A SMART Backend Services token (ES384 client assertion) for system/*.rs."""
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion(key, "ES384", EMR),
    }
    r = c.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


@pytest.fixture
def emr(client_with: Callable[..., TestClient]) -> Callable[..., tuple[TestClient, str]]:
    """A server with `auth` on and some settings, holding p1 and a Backend Services client;
    the server and a token of that client."""

    def make(**settings: Any) -> tuple[TestClient, str]:
        c = client_with(auth="on", **settings)
        seed(c, [PATIENT])
        key = ECKey.generate_key("P-384", {"kid": "emr1"}, private=True)
        jwks = {"keys": [key.as_dict(private=False)]}
        admin.add_client(auth_of(c).store, EMR, [], jwks=jwks, scope="system/*.rs")
        return c, _backend_token(c, key)

    return make


def _read(c: TestClient, token: str, **headers: str) -> int:
    return c.get("/fhir/Patient/p1", headers={"Authorization": f"Bearer {token}", **headers}) \
        .status_code  # fmt: skip


def _database(c: TestClient) -> str:
    return str(c.app.state.services.settings.database)  # type: ignore[attr-defined]


def test_a_client_removed_by_another_process_is_refused_after_token_cache_seconds(
    emr: Callable[..., tuple[TestClient, str]],
) -> None:
    c, token = emr(token_cache_seconds=0.5)
    assert _read(c, token) == 200  # this worker has now seen the token live
    seen = time.monotonic()
    # `client remove` is another process: it revokes the client's tokens in the database
    # without telling this one, which may trust what it saw until the bound (README)
    assert cli.main(["client", "remove", EMR, "--database", _database(c)]) == 0
    time.sleep(max(0.0, seen + 0.55 - time.monotonic()))
    assert _read(c, token) == 401


def test_the_default_bound_is_the_one_the_readme_states() -> None:
    assert Settings().token_cache_seconds == 2.0
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "| `token_cache_seconds` | 2 |" in readme


def test_with_token_cache_seconds_0_a_removal_elsewhere_is_refused_at_once(
    emr: Callable[..., tuple[TestClient, str]],
) -> None:
    c, token = emr(token_cache_seconds=0)
    assert _read(c, token) == 200
    assert cli.main(["client", "remove", EMR, "--database", _database(c)]) == 0
    assert _read(c, token) == 401


def test_a_cached_token_is_refused_once_it_expires(
    emr: Callable[..., tuple[TestClient, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, token = emr(token_cache_seconds=3600)  # longer than the token lives
    assert _read(c, token) == 200
    # a Backend Services token lives 300 s (auth/server.py BACKEND_SECONDS)
    later = time.time() + 301
    monkeypatch.setattr(time, "time", lambda: later)
    assert _read(c, token) == 401


def test_a_cached_token_is_refused_at_another_fhir_base(
    emr: Callable[..., tuple[TestClient, str]],
) -> None:
    c, token = emr()
    assert _read(c, token) == 200  # issued and cached for http://testserver/fhir
    # `localhost` is an allowed host: the base becomes http://localhost/fhir, not the token's aud
    r = c.get("/fhir/Patient/p1", headers={"Authorization": f"Bearer {token}",
                                           "Host": "localhost"})  # fmt: skip
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert _read(c, token) == 200


# --- two worker processes --------------------------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path, parts: Parts) -> Iterator[tuple[str, Path]]:
    """`fhir-server serve --workers 2` with token_cache_seconds 1 on a database holding a
    Backend Services client (ES384 key in tmp_path/key.json); its base URL and the database."""
    database = tmp_path / "fhir.db"
    make_services(database, parts).close()
    key = ECKey.generate_key("P-384", {"kid": "emr1"}, private=True)
    (tmp_path / "key.json").write_bytes(orjson.dumps(key.as_dict(private=True)))
    jwks = tmp_path / "emr.jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    assert cli.main(["client", "add", "--client-id", EMR, "--jwks", str(jwks), "--scope",
                     "system/*.rs", "--database", str(database)]) == 0  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FHIR_SERVER_AUTH": "on", "FHIR_SERVER_DEMO_ON_EMPTY": "false",
           "FHIR_SERVER_TOKEN_CACHE_SECONDS": "1"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port), "--database",
         str(database), "--workers", "2"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_serving(f"{base}/metadata")
        yield base, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _statuses(base: str, token: str, n: int) -> set[int]:
    """The answers to `n` reads, each on a new connection (so both workers take some)."""
    return {
        httpx.get(f"{base}/Patient", headers={"Authorization": f"Bearer {token}"}).status_code
        for _ in range(n)
    }


@pytest.mark.slow  # serve --workers 2: `make test-slow`
def test_a_revocation_reaches_every_worker_within_token_cache_seconds(
    workers: tuple[str, Path],
) -> None:
    base, tmp = workers
    key = ECKey.import_key(orjson.loads((tmp / "key.json").read_bytes()))
    token_url = base.removesuffix("/fhir") + "/auth/token"

    def signed() -> dict[str, str]:
        return {"client_assertion_type": JWT_BEARER,
                "client_assertion": assertion(key, "ES384", EMR, aud=token_url)}  # fmt: skip

    r = httpx.post(token_url, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                    **signed()})  # fmt: skip
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert _statuses(base, token, 20) == {200}  # both workers now hold it
    revoked = base.removesuffix("/fhir") + "/auth/revoke"
    assert httpx.post(revoked, data={"token": token, **signed()}).status_code == 200
    time.sleep(1.1)  # token_cache_seconds, and a little
    assert _statuses(base, token, 20) == {401}
