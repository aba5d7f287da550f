"""Tables of the SMART authorization server in SQLite (contract.AuthTables): clients, users,
one-time codes and launch values, tokens, used assertion ids, the signing key and failed
logins. Rows hold JSON the auth package defines; secrets arrive here already hashed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..auth_dump import AuthDump

if TYPE_CHECKING:
    from .store import SqliteStore

#: tables of one-time or expiring grants, keyed by the hash of the value handed out
GRANT_TABLES = ("auth_code", "auth_launch")


class AuthStore:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    # --- clients and users ---------------------------------------------------------------

    def put_client(self, client_id: str, data: dict[str, Any]) -> None:
        with self.store.write() as s:
            s.conn.execute(
                "INSERT OR REPLACE INTO auth_client VALUES (?, ?)", (client_id, _json(data))
            )

    def client(self, client_id: str) -> dict[str, Any] | None:
        return self._one("SELECT data FROM auth_client WHERE client_id = ?", client_id)

    def clients(self) -> list[dict[str, Any]]:
        rows = self.store.reader().query("SELECT data FROM auth_client ORDER BY client_id")
        return [orjson.loads(r[0]) for r in rows]

    def remove_client(self, client_id: str) -> bool:
        with self.store.write() as s:
            gone = s.conn.execute("DELETE FROM auth_client WHERE client_id = ?", (client_id,))
            s.conn.execute("UPDATE auth_token SET revoked = 1 WHERE client_id = ?", (client_id,))
            return gone.rowcount > 0

    def put_user(self, username: str, data: dict[str, Any]) -> None:
        with self.store.write() as s:
            s.conn.execute(
                "INSERT OR REPLACE INTO auth_user VALUES (?, ?)", (username, _json(data))
            )

    def user(self, username: str) -> dict[str, Any] | None:
        return self._one("SELECT data FROM auth_user WHERE username = ?", username)

    # --- one-time grants: authorization codes and launch values --------------------------

    def put_grant(
        self, table: str, key: str, client_id: str, data: dict[str, Any], expires_at: float
    ) -> None:
        assert table in GRANT_TABLES
        with self.store.write() as s:
            s.conn.execute(
                f"INSERT INTO {table} VALUES (?, ?, ?, ?)",
                (key, client_id, _json(data), expires_at),
            )

    def take_grant(
        self, table: str, key: str, now: float, consume: bool = True
    ) -> dict[str, Any] | None:
        """The grant, deleted as it is read (single use) unless only looked at, if unexpired;
        with its client_id."""
        assert table in GRANT_TABLES
        verb = "DELETE FROM" if consume else "UPDATE"
        with self.store.write() as s:
            row = s.conn.execute(
                f"{verb} {table} {'' if consume else 'SET hash = hash'} WHERE hash = ? "
                "RETURNING client_id, data, expires_at",
                (key,),
            ).fetchone()
            s.conn.execute(f"DELETE FROM {table} WHERE expires_at < ?", (now,))
        if row is None or row[2] < now:
            return None
        return {**orjson.loads(row[1]), "client_id": row[0]}

    # --- tokens --------------------------------------------------------------------------

    def put_token(
        self, key: str, client_id: str, kind: str, data: dict[str, Any], expires_at: float
    ) -> None:
        with self.store.write() as s:
            s.conn.execute(
                "INSERT INTO auth_token VALUES (?, ?, ?, ?, ?, 0)",
                (key, client_id, kind, _json(data), expires_at),
            )

    def token(self, key: str) -> tuple[str, str, dict[str, Any], float, bool] | None:
        """(client_id, kind, data, expires_at, revoked) of a token by its hash."""
        rows = self.store.reader().query(
            "SELECT client_id, kind, data, expires_at, revoked FROM auth_token WHERE hash = ?",
            (key,),
        )
        if not rows:
            return None
        r = rows[0]
        return r[0], r[1], orjson.loads(r[2]), r[3], bool(r[4])

    def revoke_token(self, key: str, client_id: str | None = None) -> bool:
        """Revoke a token (only the client's own when client_id is given), and every token of
        the same grant (RFC 7009 §2.1: revoking a refresh token ends its access tokens)."""
        with self.store.write() as s:
            row = s.conn.execute(
                "SELECT client_id, json_extract(data, '$.grant') FROM auth_token WHERE hash = ? "
                "AND revoked = 0",
                (key,),
            ).fetchone()
            if row is None or (client_id is not None and row[0] != client_id):
                return False
            s.conn.execute("UPDATE auth_token SET revoked = 1 WHERE hash = ?", (key,))
            if row[1]:
                s.conn.execute(
                    "UPDATE auth_token SET revoked = 1 WHERE json_extract(data, '$.grant') = ?",
                    (row[1],),
                )
            return True

    def rotate_refresh(self, key: str, now: float) -> tuple[str, dict[str, Any]] | None:
        """Use a refresh token once: revoke it and return (client_id, data) if it was live."""
        with self.store.write() as s:
            row = s.conn.execute(
                "UPDATE auth_token SET revoked = 1 WHERE hash = ? AND kind = 'refresh' "
                "AND revoked = 0 AND expires_at > ? RETURNING client_id, data",
                (key, now),
            ).fetchone()
        return None if row is None else (row[0], orjson.loads(row[1]))

    # --- client assertions, keys, failed logins ------------------------------------------

    def use_jti(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        """Record an assertion id; False if it was seen before and has not yet expired."""
        with self.store.write() as s:
            s.conn.execute("DELETE FROM auth_jti WHERE expires_at < ?", (now,))
            try:
                s.conn.execute("INSERT INTO auth_jti VALUES (?, ?, ?)", (issuer, jti, expires_at))
            except sqlite3.IntegrityError:
                return False
        return True

    def signing_key(self, make: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        """(kid, private JWK JSON) of the id_token key; `make()` creates one on first use."""
        with self.store.write() as s:
            row = s.conn.execute("SELECT kid, private_jwk FROM auth_key LIMIT 1").fetchone()
            if row is None:
                row = make()
                s.conn.execute("INSERT INTO auth_key VALUES (?, ?)", row)
        return str(row[0]), str(row[1])

    def failures(self, who: list[str], since: float) -> int:
        """The most failed logins any of `who` had since the instant."""
        reader = self.store.reader()
        return max(
            reader.query("SELECT count(*) FROM auth_failure WHERE who = ? AND at > ?", (w, since))[
                0
            ][0]
            for w in who
        )

    def fail(self, who: list[str], at: float, forget_before: float) -> None:
        with self.store.write() as s:
            s.conn.execute("DELETE FROM auth_failure WHERE at < ?", (forget_before,))
            s.conn.executemany("INSERT INTO auth_failure VALUES (?, ?)", [(w, at) for w in who])

    def patients_of(self, organization_id: str, limit: int = 200) -> list[tuple[str, str]]:
        """(Patient/id, display name) of current Patients whose managingOrganization is the
        organization, from the reference index (search parameter `organization`)."""
        rows = self.store.reader().query(
            "SELECT r.id, r.json FROM idx_reference i JOIN resource r ON r.rid = i.rid "
            "WHERE i.type = 'Patient' AND i.param = 'organization' "
            "AND i.target_type = 'Organization' AND i.target_id = ? AND r.deleted = 0 "
            "ORDER BY r.id LIMIT ?",
            (organization_id, limit),
        )
        return [(f"Patient/{r[0]}", display_name(orjson.loads(r[1]))) for r in rows]

    def dump(self, now: float) -> AuthDump:
        read = self.store.reader().query
        key = read("SELECT kid, private_jwk FROM auth_key LIMIT 1")
        return AuthDump(
            [(r[0], orjson.loads(r[1])) for r in read("SELECT * FROM auth_client ORDER BY 1")],
            [(r[0], orjson.loads(r[1])) for r in read("SELECT * FROM auth_user ORDER BY 1")],
            (key[0][0], key[0][1]) if key else None,
            [(r[0], r[1], r[2], orjson.loads(r[3]), r[4]) for r in read(
                "SELECT hash, client_id, kind, data, expires_at FROM auth_token "
                "WHERE revoked = 0 AND expires_at > ?", (now,))],  # fmt: skip
            [(r[0], r[1], r[2]) for r in read(
                "SELECT issuer, jti, expires_at FROM auth_jti WHERE expires_at > ?", (now,)
            )],  # fmt: skip
        )

    def _one(self, sql: str, key: str) -> dict[str, Any] | None:
        rows = self.store.reader().query(sql, (key,))
        return orjson.loads(rows[0][0]) if rows else None


def _json(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def display_name(patient: dict[str, Any]) -> str:
    for name in patient.get("name") or ():
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("family", "").split(), *name.get("given", ())]
        if parts:
            return " ".join(str(p) for p in parts)
    return str(patient.get("id", ""))
