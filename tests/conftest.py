"""Fixtures: the real app over HTTP (ASGI client or uvicorn on a port) on a real SQLite file.

Keeping the default run (`make test`) short, as tests are added:
- every test's database starts as a copy of a session-wide template holding the guide
  (`parts`, `make_services`): never build one from nothing;
- tests that only read the same data share it: a module-scoped fixture loads it once
  (tests/test_export.py `loaded`, tests/test_synthea.py `loaded`);
- tests that write to the same expensive world (users signed in, tokens issued) build it once
  per module and each get a copy of its database (`copy_database`; the signing key and the
  issued tokens live in the database, so the tokens stay valid in the copy):
  tests/test_policy_consent.py `world`, test_auth_server.py `hospital`,
  test_roles_and_auth_audit.py `referrals`;
- what is long by nature (a real browser, `serve --workers 2` or a process killed and
  restarted, a thousand connections, the whole R4 or Synthea corpus, a bench row) is marked
  `@pytest.mark.slow`: it runs in `make test-slow` (`pytest --run-slow -m slow`, CI runs both),
  with a cheap smoke test of the same area left in the default run.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps_harness import demo  # noqa: F401 (the apps' tests' fixture)
from fastapi.testclient import TestClient

from fhir_server.app import build_app, open_services
from fhir_server.interactions.hooks import transaction
from fhir_server.interactions.write import save
from fhir_server.serve import uvicorn_config
from fhir_server.services import LiveParts, Parts, Services
from fhir_server.settings import Settings
from fhir_server.storage.contract import AuditTables
from fhir_server.storage.select import open_store

DATA = Path(__file__).parent / "data"
BASE = "http://testserver/fhir"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run the long suites too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long suite: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


_TEMPLATE: list[Path] = []


@pytest.fixture(scope="session")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Parts:
    """The search registry, terminology and validator, built once; and a template database
    holding the stored guide, which every test's database starts as a copy of."""
    built = Parts.load(Settings())
    template = tmp_path_factory.mktemp("template") / "fhir.db"
    open_services(Settings(database=template), built).close()
    with sqlite3.connect(template) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _TEMPLATE.append(template)
    return built


def make_services(path: Path, parts: Parts, **settings: object) -> Services:
    """Services over a new database at `path` (a copy of the template), not yet wired."""
    if _TEMPLATE and not path.exists():
        shutil.copyfile(_TEMPLATE[0], path)
    # a test harness: anonymous requests unless a test turns authorization on (auth="on")
    config = Settings(database=path, **{"auth": "off", **settings})  # type: ignore[arg-type]
    return Services(config, open_store(config), LiveParts(parts, config))


def copy_database(source: Path, path: Path) -> Path:
    """A copy at `path` of a database a fixture built once (its server closed), with what its
    write-ahead log still held; for a per-test copy of a module-scoped world."""
    with sqlite3.connect(source) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(source, path)
    return path


def audit_tables(db: Path) -> AuditTables:
    """The audit chain of the SQLite database at `db` as `audit verify` reads it (its
    connections close when the result is dropped)."""
    return open_store(Settings(database=db)).audit


def seed(client: TestClient, resources: list[dict[str, Any]]) -> None:
    """Store resources as they are, as history imported from elsewhere: validated like every
    write, but not through REST, so the workflow rules for new referrals (which must start as
    drafts) do not apply. For fixtures holding referrals in later states."""
    seed_services(client.app.state.services, resources)  # type: ignore[attr-defined]


def seed_services(services: Services, resources: list[dict[str, Any]]) -> None:
    """seed() for Services a live server runs on (tests without a TestClient)."""
    with transaction(services) as session:
        for r in resources:
            valid = services.validator(r)
            prev = session.current(r["resourceType"], r["id"])
            save(session, services, r["resourceType"], r["id"], valid, prev, "PUT")


@pytest.fixture
def client(tmp_path: Path, parts: Parts) -> Iterator[TestClient]:
    """A fresh server on its own database file; responses are checked, never raised."""
    services = make_services(tmp_path / "fhir.db", parts)
    app = build_app(services.settings, services)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def client_with(tmp_path: Path, parts: Parts) -> Iterator[Callable[..., TestClient]]:
    """A factory for a client over an app with some settings changed."""
    opened: list[TestClient] = []

    def make(**settings: object) -> TestClient:
        services = make_services(tmp_path / f"custom{len(opened)}.db", parts, **settings)
        c = TestClient(build_app(services.settings, services), raise_server_exceptions=False)
        opened.append(c.__enter__())
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def _serve_live(services: Services) -> Iterator[str]:
    """uvicorn, configured as `serve` does, on a free loopback port, in a thread."""
    import uvicorn

    app = build_app(services.settings, services)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn_config(app, replace(services.settings, host="127.0.0.1", port=port))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def live_server(tmp_path: Path, parts: Parts) -> Iterator[str]:
    """uvicorn on a free loopback port, for tests that need real concurrent connections."""
    yield from _serve_live(make_services(tmp_path / "live.db", parts))


@pytest.fixture
def live_server_with(tmp_path: Path, parts: Parts) -> Iterator[Callable[..., str]]:
    """A factory for live servers with some settings changed; each gets its own database."""
    running: list[Iterator[str]] = []

    def make(**settings: object) -> str:
        services = make_services(tmp_path / f"live{len(running)}.db", parts, **settings)
        running.append(_serve_live(services))
        return next(running[-1])

    yield make
    for server in running:
        next(server, None)


def wait_serving(url: str, seconds: float = 60) -> None:
    """Wait until a server process started by a test answers `url` with 200."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server did not start: {url}")
