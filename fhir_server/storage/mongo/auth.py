"""The SMART authorization tables in MongoDB (contract.AuthTables), one collection each, as
the SQLite tables: `data` is the auth package's JSON as a string (its keys are not ours to
restrict to what BSON field names allow), the columns a lookup needs beside it. Every call
is one atomic single-document operation where it must be (a code or a refresh token used
once: find_one_and_delete / find_one_and_update), so none needs a transaction."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import orjson
from pymongo.errors import DuplicateKeyError

from ..auth_dump import AuthDump
from ..sqlite.auth import GRANT_TABLES, display_name

if TYPE_CHECKING:
    from pymongo.database import Database


CLIENTS, USERS, TOKENS, JTIS, KEYS, FAILURES = (
    "auth_client",
    "auth_user",
    "auth_token",
    "auth_jti",
    "auth_key",
    "auth_failure",
)


class MongoAuth:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.db = db

    # --- clients and users ---------------------------------------------------------------

    def put_client(self, client_id: str, data: dict[str, Any]) -> None:
        self.db[CLIENTS].replace_one({"_id": client_id}, {"data": _json(data)}, upsert=True)

    def client(self, client_id: str) -> dict[str, Any] | None:
        return _data(self.db[CLIENTS].find_one({"_id": client_id}))

    def clients(self) -> list[dict[str, Any]]:
        return [orjson.loads(d["data"]) for d in self.db[CLIENTS].find().sort("_id")]

    def remove_client(self, client_id: str) -> bool:
        """Its tokens are revoked first: a failure in between leaves the client, not live
        tokens of a removed client."""
        self.db[TOKENS].update_many({"client_id": client_id}, {"$set": {"revoked": True}})
        return self.db[CLIENTS].delete_one({"_id": client_id}).deleted_count > 0

    def put_user(self, username: str, data: dict[str, Any]) -> None:
        self.db[USERS].replace_one({"_id": username}, {"data": _json(data)}, upsert=True)

    def user(self, username: str) -> dict[str, Any] | None:
        return _data(self.db[USERS].find_one({"_id": username}))

    # --- one-time grants: authorization codes and launch values --------------------------

    def put_grant(
        self, table: str, key: str, client_id: str, data: dict[str, Any], expires_at: float
    ) -> None:
        assert table in GRANT_TABLES
        doc = {"_id": key, "client_id": client_id, "data": _json(data), "expires_at": expires_at}
        self.db[table].insert_one(doc)

    def take_grant(
        self, table: str, key: str, now: float, consume: bool = True
    ) -> dict[str, Any] | None:
        assert table in GRANT_TABLES
        coll = self.db[table]
        doc = coll.find_one_and_delete({"_id": key}) if consume else coll.find_one({"_id": key})
        coll.delete_many({"expires_at": {"$lt": now}})
        if doc is None or doc["expires_at"] < now:
            return None
        return {**orjson.loads(doc["data"]), "client_id": doc["client_id"]}

    # --- tokens --------------------------------------------------------------------------

    def put_token(
        self, key: str, client_id: str, kind: str, data: dict[str, Any], expires_at: float
    ) -> None:
        self.db[TOKENS].insert_one({
            "_id": key, "client_id": client_id, "kind": kind, "data": _json(data),
            "grant": data.get("grant"), "expires_at": expires_at, "revoked": False,
        })  # fmt: skip

    def token(self, key: str) -> tuple[str, str, dict[str, Any], float, bool] | None:
        d = self.db[TOKENS].find_one({"_id": key})
        if d is None:
            return None
        return d["client_id"], d["kind"], orjson.loads(d["data"]), d["expires_at"], d["revoked"]

    def revoke_token(self, key: str, client_id: str | None = None) -> bool:
        where: dict[str, Any] = {"_id": key, "revoked": False}
        if client_id is not None:
            where["client_id"] = client_id
        doc = self.db[TOKENS].find_one_and_update(where, {"$set": {"revoked": True}})
        if doc is None:
            return False
        if doc.get("grant"):
            self.db[TOKENS].update_many({"grant": doc["grant"]}, {"$set": {"revoked": True}})
        return True

    def rotate_refresh(self, key: str, now: float) -> tuple[str, dict[str, Any]] | None:
        doc = self.db[TOKENS].find_one_and_update(
            {"_id": key, "kind": "refresh", "revoked": False, "expires_at": {"$gt": now}},
            {"$set": {"revoked": True}},
        )
        return None if doc is None else (doc["client_id"], orjson.loads(doc["data"]))

    # --- client assertions, keys, failed logins ------------------------------------------

    def use_jti(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        self.db[JTIS].delete_many({"expires_at": {"$lt": now}})
        try:
            self.db[JTIS].insert_one({"_id": {"iss": issuer, "jti": jti}, "expires_at": expires_at})
        except DuplicateKeyError:
            return False
        return True

    def signing_key(self, make: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        """Two processes starting at once may both make a key: the first insert wins and the
        other reads it back."""
        doc = self.db[KEYS].find_one({"_id": "id_token"})
        if doc is None:
            kid, private = make()
            with suppress(DuplicateKeyError):
                self.db[KEYS].insert_one({"_id": "id_token", "kid": kid, "private_jwk": private})
            doc = self.db[KEYS].find_one({"_id": "id_token"})
            assert doc is not None
        return str(doc["kid"]), str(doc["private_jwk"])

    def failures(self, who: list[str], since: float) -> int:
        coll = self.db[FAILURES]
        return max(coll.count_documents({"who": w, "at": {"$gt": since}}) for w in who)

    def fail(self, who: list[str], at: float, forget_before: float) -> None:
        self.db[FAILURES].delete_many({"at": {"$lt": forget_before}})
        if who:
            self.db[FAILURES].insert_many([{"who": w, "at": at} for w in who])

    def patients_of(self, organization_id: str, limit: int = 200) -> list[tuple[str, str]]:
        """From the embedded reference index, as SQLite reads its idx_reference table."""
        where = {
            "del": False,
            "x.reference": {
                "$elemMatch": {
                    "p": "organization",
                    "target_type": "Organization",
                    "target_id": organization_id,
                }
            },
        }
        found = self.db["Patient"].find(where, {"json": 1}).sort("_id").limit(limit)
        return [(f"Patient/{d['_id']}", display_name(_loads(d["json"]))) for d in found]

    def dump(self, now: float) -> AuthDump:
        key = self.db[KEYS].find_one({"_id": "id_token"})
        live = self.db[TOKENS].find({"revoked": False, "expires_at": {"$gt": now}})
        jtis = self.db[JTIS].find({"expires_at": {"$gt": now}})
        return AuthDump(
            [(d["_id"], orjson.loads(d["data"])) for d in self.db[CLIENTS].find().sort("_id")],
            [(d["_id"], orjson.loads(d["data"])) for d in self.db[USERS].find().sort("_id")],
            None if key is None else (str(key["kid"]), str(key["private_jwk"])),
            [(d["_id"], d["client_id"], d["kind"], orjson.loads(d["data"]), d["expires_at"])
             for d in live],  # fmt: skip
            [(d["_id"]["iss"], d["_id"]["jti"], d["expires_at"]) for d in jtis],
        )


def _json(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def _loads(raw: bytes) -> dict[str, Any]:
    """Stored JSON bytes (BSON Binary, which orjson does not take as bytes)."""
    return dict(orjson.loads(bytes(raw)))


def _data(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if doc is None else dict(orjson.loads(doc["data"]))
