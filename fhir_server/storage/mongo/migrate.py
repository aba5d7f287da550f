"""`fhir-server migrate --from fhir.db --to mongodb://...`: every version of every resource,
with its history, copied from a SQLite database into MongoDB. Each resource keeps its row
number (the default search order stays the same) and its versions, timestamps and methods;
the current version's index section is made by the same extractors as any write (`index`,
given by the caller: storage does not know the search registry). Then the authorization
tables, the audit trail, the integrations' inbox and the Subscriptions' owners (`carry_*`),
through the contract's AuthTables, AuditTables, Inbox and SubscriptionTables. Export jobs
are left: their files last `export_retention_hours`, a client kicks one off again."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import groupby

import orjson

from ..contract import AuditRow, Message, Store, Stored, Version
from .store import MongoStore

#: resources written per batch (one transaction each on a replica set)
BATCH = 500


def copy(
    versions: Iterable[tuple[int, Stored]],
    target: MongoStore,
    index: Callable[[Stored], Version],
) -> tuple[int, int]:
    """(resources, versions) copied. `versions` come oldest first per resource (dump.py);
    only the last of each is indexed, older ones only enter the history."""
    resources = copied = top = 0
    pending: list[tuple[int, Version]] = []
    for (_, _), group in groupby(versions, key=lambda rv: (rv[1].type, rv[1].id)):
        chain = list(group)
        for n, (rid, stored) in enumerate(chain, 1):
            last = n == len(chain)
            pending.append((rid, index(stored) if last else Version(stored, {}, None, {})))
            top = max(top, rid)
        resources += 1
        copied += len(chain)
        if len(pending) >= BATCH:
            _write(target, pending)
            pending = []
    if pending:
        _write(target, pending)
    # new resources continue after the copied row numbers
    target.advance(top)
    return resources, copied


def _write(target: MongoStore, versions: list[tuple[int, Version]]) -> None:
    with target.write() as session:
        session.save_many(list(versions))


def carry_auth(source: Store, target: Store, now: float) -> dict[str, int]:
    """The authorization tables' durable part (contract.AuthDump says what and why), taken
    in by the target's own AuthTables calls; counts of what was copied."""
    auth = source.auth.dump(now)
    for client_id, data in auth.clients:
        target.auth.put_client(client_id, data)
    for username, data in auth.users:
        target.auth.put_user(username, data)
    if auth.key is not None:
        key = auth.key
        if target.auth.signing_key(lambda: key) != key:
            raise ValueError("the target already has another id_token signing key")
    for token in auth.tokens:
        target.auth.put_token(*token)
    for issuer, jti, expires_at in auth.jtis:
        target.auth.use_jti(issuer, jti, expires_at, now)
    return {"clients": len(auth.clients), "users": len(auth.users), "tokens": len(auth.tokens)}


def carry_audit(source: Store, target: Store) -> int | None:
    """The audit records with their chain: the same seq, bytes and hashes, so the target's
    head is the source's and `audit verify` recomputes the same chain. A record not yet
    expanded into AuditEvents stays pending, due at once (its writer is gone), for the
    target's sweep. The number copied; None, copying nothing, when the source's trail
    starts with a schema-4 chain (AuditEvents chained one by one), which MongoDB does not
    hold: the records after it would not verify without it."""
    if next(source.audit.chained(), None) is not None:
        return None
    copied = 0
    batch: list[AuditRow] = []
    waiting = False
    for row, pending in source.audit.records():
        if batch and (pending != waiting or len(batch) >= BATCH):
            _append(target, batch, waiting)
            batch = []
        batch.append(row)
        waiting = pending
        copied += 1
    if batch:
        _append(target, batch, waiting)
    return copied


def inbox_empty(target: Store) -> None:
    """Refuse a target whose inbox holds messages before anything is copied: their seqs
    would mix with the source's (two messages, one URL)."""
    if next(target.inbox.records(), None) is not None:
        raise ValueError("the target's inbox (HL7 v2 messages) is not empty; migrate into "
                         "a new database")  # fmt: skip


def carry_inbox(source: Store, target: Store) -> int:
    """The integrations' inbox as it is (contract.Inbox.put_records says what and why): the
    message log and replays go on, a message still `received` is mapped by the target's
    mapper, a resend of a mapped one stays a duplicate. The number copied."""
    copied = 0
    batch: list[tuple[Message, bool]] = []
    for record in source.inbox.records():
        batch.append(record)
        if len(batch) >= BATCH:
            target.inbox.put_records(batch)
            copied, batch = copied + len(batch), []
    target.inbox.put_records(batch)
    return copied + len(batch)


def carry_owners(source: Store, target: Store) -> int:
    """Each Subscription's owner, whose access narrows what it notifies: one left behind
    would read as the server's (None), notified of everything. Owners of deleted
    Subscriptions are left: nothing reads them, a write that revives one sets its owner.
    The number copied."""
    owners = [(orjson.loads(raw)["id"], owner)
              for raw, owner in source.subscriptions.current(source.reader()) if owner]  # fmt: skip
    with target.write() as session:
        for subscription_id, principal in owners:
            target.subscriptions.set_owner(session, subscription_id, principal)
    return len(owners)


def _append(target: Store, rows: list[AuditRow], pending: bool) -> None:
    with target.write() as session:
        head = target.audit.head(session)
        if (head[0] if head else 0) != rows[0][0] - 1:
            raise ValueError("the target already has an audit trail")
        target.audit.append(session, head, rows, 0.0 if pending else None)
