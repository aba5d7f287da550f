"""The SMART authorization server and the audit trail over REST on every backend available
(tests/test_storage_contract.py says which): SQLite, MongoDB through mongomock, and a real
MongoDB when FHIR_TEST_MONGODB_URL is set. The server runs with auth on and audit on.

Expectations come from the specs: RFC 6749 (a code is used once, §4.1.2; refresh, §6), RFC
7009 §2.1 (revoking a refresh token ends the grant's access tokens), RFC 7523 / SMART Backend
Services (a `jti` is not accepted twice), SMART App Launch (a patient-scoped token reads that
patient only), and the chain formula of security.md §4.2 (hash_n = SHA-256(hash_n-1 ||
record_n), 32 zero bytes before the first), recomputed here by hand from the stored records."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import make_services, seed, seed_services
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from mllp_harness import Harness, fields, sample
from smart import (
    BASE,
    JWT_BEARER,
    PASSWORD,
    REDIRECT,
    assertion,
    auth_code,
    auth_of,
    drive,
    hidden,
    pkce,
)
from test_policy_consortium import _obs, _serve, login
from test_storage_contract import BACKENDS, open_backend
from test_subscriptions import Lines, subscribe

from fhir_server import cli
from fhir_server.audit.chain import verify
from fhir_server.auth import admin
from fhir_server.services import Parts

SCOPE = "openid fhirUser launch/patient patient/*.rs offline_access"


def _world() -> list[dict[str, Any]]:
    """A hospital, its practitioner, two of its patients and one of another hospital's."""
    out: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "h1", "name": "Hospital One"},
        {"resourceType": "Organization", "id": "h2", "name": "Hospital Two"},
        {"resourceType": "PractitionerRole", "id": "dr1",
         "organization": {"reference": "Organization/h1"}},
    ]  # fmt: skip
    for pid, org, family in (("p1", "h1", "Wang"), ("p2", "h1", "Li"), ("p3", "h2", "Zhao")):
        out.append({"resourceType": "Patient", "id": pid, "name": [{"family": family}],
                    "managingOrganization": {"reference": f"Organization/{org}"}})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return RSAKey.generate_key(2048, {"kid": "k1"}, private=True)


@pytest.fixture(params=BACKENDS)
def smart(
    request: pytest.FixtureRequest, tmp_path: Path, parts: Parts, rsa_key: Any
) -> Iterator[TestClient]:
    """A server with auth and audit on: the world stored, a public app, a backend client
    (system/*.cruds) and a practitioner registered through the store's AuthTables."""
    c, close = open_backend(request.param, parts, tmp_path, auth="on", audit=True)
    c.backend = request.param  # type: ignore[attr-defined]
    _register(c, rsa_key)
    yield c
    close()


def _register(c: TestClient, rsa_key: Any) -> None:
    seed_services(c.app.state.services, _world())  # type: ignore[attr-defined]
    store = auth_of(c).store
    admin.add_client(store, "pub", [REDIRECT], public=True)
    jwks = {"keys": [rsa_key.as_dict(private=False)]}
    admin.add_client(store, "emr", [], jwks=jwks, scope="system/*.cruds")
    admin.add_user(store, "drwang", PASSWORD, "PractitionerRole/dr1")


def _code(c: TestClient, **extra: str) -> tuple[str, str]:
    """(authorization code, PKCE verifier) for the public app, driven like a browser."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    params = {
        "response_type": "code", "client_id": "pub", "redirect_uri": REDIRECT, "scope": SCOPE,
        "state": state, "aud": BASE, "code_challenge": challenge,
        "code_challenge_method": "S256", **extra,
    }  # fmt: skip
    return auth_code(drive(c, params, "drwang", "Patient/p1"), state), verifier


def _exchange(c: TestClient, code: str, verifier: str) -> Any:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": "pub"}  # fmt: skip
    return c.post("/auth/token", data=form)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _system_token(c: TestClient, key: Any) -> Any:
    form = {
        "grant_type": "client_credentials", "scope": "system/*.cruds",
        "client_assertion_type": JWT_BEARER, "client_assertion": assertion(key, "RS384", "emr"),
    }  # fmt: skip
    return c.post("/auth/token", data=form)


# --- the SMART authorization server -------------------------------------------------------


def test_code_flow_refresh_and_revocation(smart: TestClient) -> None:
    code, verifier = _code(smart)
    r = _exchange(smart, code, verifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["patient"] == "p1"  # picked in the picker
    # a code is used once (RFC 6749 §4.1.2)
    again = _exchange(smart, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # the id_token is signed with the key the server published (SMART: RS256)
    keys = KeySet.import_key_set(smart.get("/auth/jwks").json())
    claims = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["aud"] == "pub" and claims["fhirUser"].endswith("PractitionerRole/dr1")
    # a patient-scoped token reads its patient, not another
    assert smart.get("/fhir/Patient/p1", headers=_bearer(body["access_token"])).status_code == 200
    assert smart.get("/fhir/Patient/p2", headers=_bearer(body["access_token"])).status_code in (
        403, 404,
    )  # fmt: skip
    # refresh rotates: the old refresh token is used up (RFC 6749 §6, §10.4)
    form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    r = smart.post("/auth/token", data={**form, "client_id": "pub"})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["patient"] == "p1" and second["refresh_token"] != body["refresh_token"]
    used = smart.post("/auth/token", data={**form, "client_id": "pub"})
    assert used.status_code == 400 and used.json()["error"] == "invalid_grant"
    # revoking the refresh token ends the grant's access tokens (RFC 7009 §2.1)
    access = _bearer(second["access_token"])
    assert smart.get("/fhir/Patient/p1", headers=access).status_code == 200
    r = smart.post("/auth/revoke", data={"token": second["refresh_token"], "client_id": "pub"})
    assert r.status_code == 200
    assert smart.get("/fhir/Patient/p1", headers=access).status_code == 401
    refresh = {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
    r = smart.post("/auth/token", data={**refresh, "client_id": "pub"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_ehr_launch_and_a_removed_client(smart: TestClient) -> None:
    """A launch value (one-time grant) carries the patient; removing the client revokes the
    tokens it holds."""
    launch = admin.create_launch(auth_of(smart).store, "pub", "drwang", "Patient/p2")
    code, verifier = _code(smart, launch=launch, scope="launch openid fhirUser patient/*.rs")
    body = _exchange(smart, code, verifier).json()
    assert body["patient"] == "p2"
    token = _bearer(body["access_token"])
    assert smart.get("/fhir/Patient/p2", headers=token).status_code == 200
    assert auth_of(smart).store.remove_client("pub") is True
    # removed as `fhir-server client remove` does, from outside the server: its cache of
    # checked tokens would forget this one within token_cache_seconds; here at once
    auth_of(smart).principals.clear()
    assert smart.get("/fhir/Patient/p2", headers=token).status_code == 401
    assert [c["client_id"] for c in auth_of(smart).store.clients()] == ["emr"]


def test_backend_services_and_assertion_replay(smart: TestClient, rsa_key: Any) -> None:
    form = {
        "grant_type": "client_credentials", "scope": "system/Patient.rs",
        "client_assertion_type": JWT_BEARER, "client_assertion": assertion(rsa_key, "RS384", "emr"),
    }  # fmt: skip
    r = smart.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    token = _bearer(r.json()["access_token"])
    assert smart.get("/fhir/Patient/p3", headers=token).status_code == 200
    replayed = smart.post("/auth/token", data=form)  # the same jti again (RFC 7523 §3 7.)
    assert replayed.status_code in (400, 401) and replayed.json()["error"] == "invalid_client"


def test_dump_holds_what_outlives_a_move(smart: TestClient, rsa_key: Any) -> None:
    """AuthTables.dump (what `migrate` carries): clients, users, the published key, live
    tokens only (a revoked grant's are left behind), unexpired assertion ids."""
    code, verifier = _code(smart)
    gone = _exchange(smart, code, verifier).json()
    smart.post("/auth/revoke", data={"token": gone["refresh_token"], "client_id": "pub"})
    assert _system_token(smart, rsa_key).status_code == 200
    store = auth_of(smart).store
    dump = store.dump(time.time())
    assert [cid for cid, _ in dump.clients] == ["emr", "pub"]
    assert [name for name, _ in dump.users] == ["drwang"]
    assert dump.key is not None and dump.key[0] == smart.get("/auth/jwks").json()["keys"][0]["kid"]
    assert dump.tokens and all(store.token(t[0])[4] is False for t in dump.tokens)
    assert {t[1] for t in dump.tokens if t[2] == "access"} == {"emr"}  # pub's grant revoked
    assert [issuer for issuer, _, _ in dump.jtis] == ["emr"]


def test_failed_logins_are_counted(smart: TestClient) -> None:
    """Five wrong passwords, then the right one is refused for a while (429)."""
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": "pub", "redirect_uri": REDIRECT,
              "scope": SCOPE, "state": "s", "aud": BASE, "code_challenge": challenge,
              "code_challenge_method": "S256"}  # fmt: skip
    page = smart.get("/auth/authorize", params=params).text
    for _ in range(5):
        wrong = {**hidden(page), "username": "drwang", "password": "wrong password"}
        assert smart.post("/auth/authorize", data=wrong).status_code == 401
    right = {**hidden(page), "username": "drwang", "password": PASSWORD}
    assert smart.post("/auth/authorize", data=right).status_code == 429


# --- the audit trail ---------------------------------------------------------------------------


def _records(c: TestClient) -> list[tuple[int, bytes, str]]:
    services = c.app.state.services  # type: ignore[attr-defined]
    services.features["audit"].flush()
    return [row for row, _ in services.store.audit.records()]


def _tables(c: TestClient) -> Any:
    return c.app.state.services.store.audit  # type: ignore[attr-defined]


def _traffic(c: TestClient, key: Any) -> str:
    """A token (a security event), a create, a read and a search by the backend client; the
    created Patient's id."""
    token = _bearer(_system_token(c, key).json()["access_token"])
    new = {"resourceType": "Patient", "name": [{"family": "Audit"}]}
    r = c.post("/fhir/Patient", json=new, headers=token)
    assert r.status_code == 201, r.text
    pid = str(r.json()["id"])
    assert c.get(f"/fhir/Patient/{pid}", headers=token).status_code == 200
    assert c.get("/fhir/Patient?family=Audit", headers=token).status_code == 200
    return pid


def test_records_are_appended_and_chained(smart: TestClient, rsa_key: Any) -> None:
    pid = _traffic(smart, rsa_key)
    rows = _records(smart)
    # seq 1, 2, ... and each hash recomputed by hand from the one before (security.md §4.2)
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    previous = bytes(32)
    for _, data, digest in rows:
        previous = hashlib.sha256(previous + data).digest()
        assert digest == previous.hex()
    records = [orjson.loads(data) for _, data, _ in rows]
    # the create is recorded with the version it wrote
    writes = [r for r in records if r.get("do") == "create"]
    assert [w["what"] for r in writes for w in r["targets"]] == [f"Patient/{pid}/_history/1"]
    found = verify(_tables(smart))
    assert found.broken is None and found.records == len(rows) and found.pending == 0
    assert found.events >= len(rows)  # every record expanded into AuditEvents


def test_verify_finds_a_tampered_record_and_audit_event(smart: TestClient, rsa_key: Any) -> None:
    pid = _traffic(smart, rsa_key)
    rows = _records(smart)
    seq, data, _ = next(r for r in rows if f"Patient/{pid}/_history/1".encode() in r[1])
    _tamper_record(smart, seq, data.replace(pid.encode(), b"someone-else"))
    found = verify(_tables(smart))
    assert found.broken is not None and found.broken.startswith(f"record seq {seq}: hash mismatch")
    assert found.records == seq - 1
    _tamper_record(smart, seq, data)  # put back: the chain holds again
    assert verify(_tables(smart)).broken is None
    # an AuditEvent changed in place: SQLite keeps one copy of a current version (it then
    # differs from its record), MongoDB two (the current one then differs from the first)
    event = orjson.loads(data)["id"] + "-1"
    _tamper_event(smart, event)
    broken = verify(_tables(smart)).broken
    found_as = ("differs from its record", "was changed or deleted after it was stored")
    assert broken in [f"record seq {seq}: AuditEvent/{event} {why}" for why in found_as]


def _tamper_record(c: TestClient, seq: int, data: bytes) -> None:
    """Rewrite a record's bytes behind the server's back, as someone with database access."""
    store = c.app.state.services.store  # type: ignore[attr-defined]
    if c.backend == "sqlite":  # type: ignore[attr-defined]
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE audit_record SET record = ? WHERE seq = ?", (data, seq))
    else:
        store.db["audit_record"].update_one({"_id": seq}, {"$set": {"record": data}})


def _tamper_event(c: TestClient, rid: str) -> None:
    """Change the current AuditEvent's outcome (its first version left as it was)."""
    store = c.app.state.services.store  # type: ignore[attr-defined]
    if c.backend == "sqlite":  # type: ignore[attr-defined]
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "UPDATE resource SET json = CAST(replace(CAST(json AS TEXT), '\"outcome\":\"0\"', "
                "'\"outcome\":\"8\"') AS BLOB) WHERE type = 'AuditEvent' AND id = ?", (rid,)
            )  # fmt: skip
    else:
        doc = store.db["AuditEvent"].find_one({"_id": rid})
        changed = bytes(doc["json"]).replace(b'"outcome":"0"', b'"outcome":"8"')
        store.db["AuditEvent"].update_one({"_id": rid}, {"$set": {"json": changed}})


@pytest.mark.parametrize("kind", [b for b in BACKENDS if b != "sqlite"])
def test_a_writer_chaining_after_a_moved_head_fails(
    kind: str, tmp_path: Path, parts: Parts
) -> None:
    """MongoDB: the compare and set on the head document. A writer that read the head before
    another appended gets 503 (retry), and the chain is not forked."""
    from fhir_server.errors import FhirError

    c, close = open_backend(kind, parts, tmp_path, audit=True)
    try:
        store = c.app.state.services.store  # type: ignore[attr-defined]
        tables = store.audit
        assert c.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
        reader = store.reader()
        head = tables.head(reader)
        assert head is not None
        seq, digest = head
        tables.append(reader, head, [(seq + 1, b"{}", "a" * 64)], None)  # the first writer
        with pytest.raises(FhirError) as raised:  # the second, from the same head
            tables.append(reader, head, [(seq + 1, b"[]", "b" * 64)], None)
        assert raised.value.status == 503
        assert tables.head(reader) == (seq + 1, "a" * 64)
    finally:
        close()


# --- fhir-server migrate: the authorization tables and the audit trail come along --------


def test_migrate_carries_clients_users_tokens_and_the_audit_chain(
    tmp_path: Path, parts: Parts, rsa_key: Any
) -> None:
    """After `migrate`, the SQLite server's clients, user, signing key and refresh grant work
    on MongoDB, a used assertion is still refused (RFC 7523 §3), and the audit records are
    the same bytes and hashes, the chain recomputed by hand (security.md §4.2) and by
    `audit verify`, which then finds a record changed on the target."""
    mongomock = pytest.importorskip("mongomock")
    from fhir_server.app import build_app
    from fhir_server.cli import migrate_into
    from fhir_server.services import LiveParts, Services
    from fhir_server.settings import Settings
    from fhir_server.storage.mongo import MongoStore

    source, close = open_backend("sqlite", parts, tmp_path, auth="on", audit=True)
    _register(source, rsa_key)
    pid = _traffic(source, rsa_key)
    code, verifier = _code(source)
    grant = _exchange(source, code, verifier).json()
    used = {"grant_type": "client_credentials", "scope": "system/*.cruds",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(rsa_key, "RS384", "emr")}  # fmt: skip
    assert source.post("/auth/token", data=used).status_code == 200
    jwks = source.get("/auth/jwks").json()
    rows = _records(source)
    assert len(rows) > 3
    database = Path(source.app.state.services.settings.database)  # type: ignore[attr-defined]
    close()
    # a record chained but not expanded into AuditEvents (its writer died): a copy of the
    # last one under a new id, hashed by hand after it
    from fhir_server.storage.sqlite.store import SqliteStore

    last = orjson.loads(rows[-1][1])
    data = orjson.dumps({**last, "id": "waiting"})
    digest = hashlib.sha256(bytes.fromhex(rows[-1][2]) + data).hexdigest()
    rows.append((len(rows) + 1, data, digest))
    kept = SqliteStore(database)
    with kept.write() as session:
        kept.audit.append(session, kept.audit.head(session), rows[-1:], 1.0)
    kept.close()

    config = Settings(database=tmp_path / "unused.db", auth="on", audit=True,
                      demo_on_empty=False)  # fmt: skip
    target = MongoStore(mongomock.MongoClient(), "migrated")
    assert migrate_into(database, target, config) == 0
    # the records: the same seq, bytes and hashes, chained from 32 zero bytes; the last pending
    migrated = list(MongoStore(target.client, "migrated").audit.records())
    assert [row for row, _ in migrated] == rows
    assert [pending for _, pending in migrated] == [False] * (len(rows) - 1) + [True]
    previous = bytes(32)
    for _, data, digest in rows:
        previous = hashlib.sha256(previous + data).digest()
        assert digest == previous.hex()
    services = Services(config, MongoStore(target.client, "migrated"), LiveParts(parts, config))
    with TestClient(build_app(config, services), raise_server_exceptions=False) as c:
        c.backend = "mongomock"  # type: ignore[attr-defined]
        _records(c)  # the target's writer expands the pending record
        found = verify(_tables(c))
        assert found.broken is None and found.records == len(rows) and found.pending == 0
        assert _tables(c).stored_event("waiting-1") is not None
        # the refresh grant made on SQLite is used (and rotated) on MongoDB
        form = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"],
                "client_id": "pub"}  # fmt: skip
        r = c.post("/auth/token", data=form)
        assert r.status_code == 200, r.text
        access = _bearer(r.json()["access_token"])
        assert c.get("/fhir/Patient/p1", headers=access).status_code == 200
        # the user signs in to the public app again; the id_token has the same key as before
        code, verifier = _code(c)
        r = _exchange(c, code, verifier)
        assert r.status_code == 200, r.text
        assert c.get("/auth/jwks").json() == jwks
        claims = jwt.decode(r.json()["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
        assert claims.claims["fhirUser"].endswith("PractitionerRole/dr1")
        # the backend client: a used assertion is refused, a new one gets a token
        assert c.post("/auth/token", data=used).json()["error"] == "invalid_client"
        token = _system_token(c, rsa_key)
        assert token.status_code == 200, token.text
        access = _bearer(token.json()["access_token"])
        assert c.get(f"/fhir/Patient/{pid}", headers=access).status_code == 200
        # the chain goes on after the migrated head, then a changed record is found
        after = _records(c)
        assert after[: len(rows)] == rows and len(after) > len(rows)
        assert verify(_tables(c)).broken is None
        seq, data, _ = next(r for r in rows if f"Patient/{pid}/_history/1".encode() in r[1])
        _tamper_record(c, seq, data.replace(pid.encode(), b"someone-else"))
        broken = verify(_tables(c)).broken
        assert broken is not None and broken.startswith(f"record seq {seq}: hash mismatch")


def test_migrate_leaves_a_schema_4_trail_behind_and_says_so(
    tmp_path: Path, parts: Parts, capsys: pytest.CaptureFixture[str]
) -> None:
    """MongoDB holds no schema-4 chain (AuditEvents chained one by one): records that continue
    one would not verify there, so none is copied and migrate says why; resources are."""
    mongomock = pytest.importorskip("mongomock")
    import sqlite3

    from fhir_server.cli import migrate_into
    from fhir_server.settings import Settings
    from fhir_server.storage.mongo import MongoStore

    source, close = open_backend("sqlite", parts, tmp_path, audit=True)
    assert source.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
    database = Path(source.app.state.services.settings.database)  # type: ignore[attr-defined]
    close()
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO audit_chain VALUES (1, 'AuditEvent', 'old-1', 1, ?)", ("0" * 64,))
    config = Settings(database=tmp_path / "unused.db", audit=False, demo_on_empty=False)
    target = MongoStore(mongomock.MongoClient(), "migrated")
    assert migrate_into(database, target, config) == 0
    assert "schema-4" in capsys.readouterr().err
    assert list(target.audit.records()) == []
    assert target.db["Patient"].count_documents({}) == 1


# --- fhir-server migrate: the HL7 v2 inbox and the Subscriptions' owners come along ---------


def test_migrate_carries_the_hl7_inbox_and_subscription_owners(
    tmp_path: Path, parts: Parts, capsys: pytest.CaptureFixture[str]
) -> None:
    """Messages sent over MLLP to the SQLite server (mapped, resent, failed with the key kept
    and with it released, refused, still waiting) are on MongoDB after `migrate` under the
    same seq with the same status, bytes, error and meta: a resend of what holds its key is
    a duplicate (HL7 v2.5.1 ch. 2: MSH-10 identifies a message), of what released it a new
    message numbered after the copied ones; the waiting one is mapped by the target's mapper.
    A user's Subscription keeps its owner, so it still notifies only what the user may see."""
    mongomock = pytest.importorskip("mongomock")
    import sqlite3

    from fhir_server.app import build_app
    from fhir_server.cli import migrate_into
    from fhir_server.services import LiveParts, Services
    from fhir_server.settings import Settings
    from fhir_server.storage.mongo import MongoStore
    from integrations.hl7v2.worker import CHANNEL

    admit, resend = sample("adt_a01_admit.hl7"), sample("adt_a01_resend.hl7")
    # PID-8 X is not in table 0001: stored, acknowledged (original mode), mapping fails
    unknown_sex = sample("adt_a28_add_person.hl7").replace(b"|20010203|F|", b"|20010203|X|")
    # the same with MSH-16 AL (enhanced mode): the sender is told, so the key is released
    told = unknown_sex.replace(b"ADT20240306-0040|P|2.4|||||", b"ADT20240306-0041|P|2.4||||AL|")
    refused = admit.replace(b"ADT20240301-0001|P|2.4|", b"ADT20240301-0009|P|9.9|")  # MSH-12
    waiting = sample("adt_a04_register_gb18030.hl7")  # GB 18030 bytes, not UTF-8
    database = tmp_path / "fhir.db"
    served = _serve(database, parts)
    source = next(served)
    hl7 = Harness(source)
    try:
        assert fields(hl7.send(admit), "MSA")[1] == "AA"
        hl7.wait_mapped()
        assert fields(hl7.send(resend), "MSA")[1] == "AA"
        assert fields(hl7.send(unknown_sex), "MSA")[1] == "AA"
        assert fields(hl7.send(told), "MSA")[1] == "CA"
        assert fields(hl7.send(refused), "MSA")[1] == "AR"
        hl7.wait_mapped()
        mine = subscribe(login(source, "dra"), "Observation?status=final", {"type": "websocket"})
        theirs = subscribe(login(source, "drb"), "Observation?status=final",
                           {"type": "websocket"})  # fmt: skip
    finally:
        hl7.close()
        served.close()
    services = make_services(database, parts, hl7_map=False)  # `hl7 listen --receive-only`
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        keeper = Harness(c)
        try:
            assert fields(keeper.send(waiting), "MSA")[1] == "AA"
        finally:
            keeper.close()

    columns = ("seq, channel, sender, message_id, received_at, remote, kind, status, error, "
               "attempts, updated_at, duplicates, meta, raw")  # fmt: skip
    with sqlite3.connect(database) as conn:
        rows = conn.execute(f"SELECT {columns}, dedup FROM inbox ORDER BY seq").fetchall()
        owners = dict(conn.execute("SELECT id, principal FROM subscription_owner").fetchall())
    # seq, MSH-10, status, duplicates, key held: by hand from what was sent
    assert [(r[0], r[3], r[7], r[11], r[14]) for r in rows] == [
        (1, "ADT20240301-0001", "mapped", 1, 1),
        (2, "ADT20240306-0040", "error", 0, 1),
        (3, "ADT20240306-0041", "error", 0, 0),
        (4, "ADT20240301-0009", "rejected", 0, 0),
        (5, "ADT20240305-0033", "received", 0, 1),
    ]  # fmt: skip
    assert rows[4][13] == waiting and "PID-8" in rows[1][8]
    assert {orjson.loads(p)["user"] for p in owners.values()} == {"dra", "drb"}
    assert set(owners) == {mine, theirs}

    config = Settings(database=tmp_path / "unused.db", auth="off", demo_on_empty=False)
    target = MongoStore(mongomock.MongoClient(), "migrated")
    assert migrate_into(database, target, config) == 0
    assert "5 inbox messages, 2 subscription owners" in capsys.readouterr().err
    for row in rows:
        m = target.inbox.get(row[0])
        assert m is not None
        assert (m.seq, m.channel, m.sender, m.message_id, m.received_at, m.remote, m.kind,
                m.status, m.error, m.attempts, m.updated_at, m.duplicates) == row[:12]
        assert m.meta == orjson.loads(row[12]) and m.raw == row[13]

    services = Services(config, MongoStore(target.client, "migrated"), LiveParts(parts, config))
    with TestClient(build_app(config, services), raise_server_exceptions=False) as c:
        hl7 = Harness(c)
        try:
            # the message still received is mapped by the target's mapper
            hl7.wait_mapped()
            [made] = hl7.search("Patient?identifier=0007654321")
            assert made["name"][0]["family"] == "葉"
            got = hl7.inbox.get(5)
            assert got is not None and got.status == "mapped" and got.attempts == 1
            assert c.get("/hl7/messages/5/raw").content == waiting
            assert c.get("/hl7/messages/3").json()["controlId"] == "ADT20240306-0041"
            # keys held are still held: a resend is acknowledged and counted, nothing new
            patients = len(hl7.search("Patient?_count=100"))
            assert fields(hl7.send(resend), "MSA")[1:3] == ["AA", "ADT20240301-0001"]
            assert fields(hl7.send(unknown_sex), "MSA")[1] == "AA"
            # a released key: the resend is a new message, numbered after the copied ones
            assert fields(hl7.send(told), "MSA")[1] == "CA"
            hl7.wait_mapped()
            # (MongoDB's counter may leave gaps: a duplicate's arrival took a seq too)
            newest, *copied = [m.seq for m in hl7.inbox.search(CHANNEL)]
            assert copied == [5, 4, 3, 2, 1] and newest > 5
            assert c.get(f"/hl7/messages/{newest}").json()["controlId"] == "ADT20240306-0041"
            assert [m.duplicates for m in hl7.inbox.search(CHANNEL, before=3)] == [1, 2]
            assert hl7.inbox.counts(CHANNEL) == {"received": 0, "mapped": 2, "error": 3,
                                                 "rejected": 1}  # fmt: skip
            assert len(hl7.search("Patient?_count=100")) == patients
        finally:
            hl7.close()
        # dra's Subscription tells of A's patient pa only (a server's one, of both); the
        # owners are the source's
        with c.websocket_connect("/fhir/websocket") as ws:
            lines = Lines(ws)
            ws.send_text(f"bind {mine}")
            assert lines.settle(0.2) == [f"bound {mine}"]
            seed(c, [_obs("new-b", "pb"), _obs("new-a", "pa")])
            assert lines.settle() == [f"ping {mine}"]
        reader = services.store.reader()
        for sid, principal in owners.items():
            assert services.store.subscriptions.owner(reader, sid) == orjson.loads(principal)


def test_migrate_refuses_a_target_whose_inbox_has_messages(
    tmp_path: Path, parts: Parts, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seqs of two databases would mix (two messages, one /hl7/messages URL): nothing is
    copied and migrate says why."""
    mongomock = pytest.importorskip("mongomock")
    from fhir_server.cli import migrate_into
    from fhir_server.settings import Settings
    from fhir_server.storage.mongo import MongoStore
    from integrations.hl7v2.inbox import Arrival

    source, close = open_backend("sqlite", parts, tmp_path)
    assert source.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
    database = Path(source.app.state.services.settings.database)  # type: ignore[attr-defined]
    close()
    target = MongoStore(mongomock.MongoClient(), "migrated")
    target.inbox.receive([Arrival("hl7v2", "HZFIRST/HIS", "m1", "2026-01-01T00:00:00Z", None,
                                  "ADT^A01", b"MSH|...")])  # fmt: skip
    config = Settings(database=tmp_path / "unused.db", demo_on_empty=False)
    assert migrate_into(database, target, config) == 1
    assert "inbox" in capsys.readouterr().err
    assert target.db["Patient"].count_documents({}) == 0


@pytest.mark.parametrize("kind", BACKENDS)
def test_inbox_records_put_as_they_were(kind: str, tmp_path: Path, parts: Parts) -> None:
    """Inbox.put_records keeps seq, counts and key; new arrivals are numbered after them."""
    from fhir_server.storage.contract import Message
    from integrations.hl7v2.inbox import Arrival

    c, close = open_backend(kind, parts, tmp_path)
    try:
        inbox = c.app.state.services.store.inbox  # type: ignore[attr-defined]
        kept = Message(7, "hl7v2", "F/A", "m1", "2026-01-01T00:00:00Z", "10.0.0.1:5", "ADT^A01",
                       "mapped", None, 2, "2026-01-01T00:00:01Z", 3, {"n": 1}, b"\xff")
        freed = Message(9, "hl7v2", "F/A", "m2", "2026-01-01T00:00:02Z", None, "ADT^A01",
                        "error", "PID-8", 1, None, 0, {}, b"x")  # fmt: skip
        inbox.put_records([(kept, True), (freed, False)])
        assert list(inbox.records()) == [(kept, True), (freed, False)]
        new = Arrival("hl7v2", "F/A", "m2", "2026-01-02T00:00:00Z", None, "ADT^A01", b"y")
        again = Arrival("hl7v2", "F/A", "m1", "2026-01-02T00:00:00Z", None, "ADT^A01", b"z")
        assert inbox.receive([new, again]) == [(10, False), (7, True)]
        with pytest.raises(ValueError):
            inbox.put_records([(kept, False)])
    finally:
        close()


# --- backup ---------------------------------------------------------------------------------


def test_backup_of_a_mongodb_database_points_to_mongodump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("backup", "restore"):
        argv = [command, str(tmp_path / "copy.db"), "--database", "mongodb://db.example/fhir"]
        assert cli.main(argv) != 0
        err = capsys.readouterr().err
        assert "mongodump" in err and "Traceback" not in err
    assert not (tmp_path / "copy.db").exists()
