"""The indexes of the MongoDB backend, declared here and created at start-up (createIndexes
is a no-op for an index that exists): `fhir-server mongo-indexes` is not needed, and an
operator sees them with `db.Patient.getIndexes()` (README, MongoDB)."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import CollectionInvalid

from ...spec import RESOURCE_TYPES

if TYPE_CHECKING:
    from pymongo.database import Database

#: the column a parameter type sorts by (as sqlite/search.py _SORT_COLUMN)
SORT_COLUMN = {
    "string": "value",
    "token": "code",
    "reference": "target_id",
    "date": "low",
    "number": "low",
    "quantity": "value",
}

#: per index table, the multikey index over its embedded rows: parameter first, then the
#: columns a lookup compares (the same order as the SQLite index tables' value indexes)
ENTRY_INDEXES: dict[str, tuple[str, ...]] = {
    "string": ("p", "value"),
    "token": ("p", "code", "system"),
    "reference": ("p", "target_id", "target_type"),
    "date": ("p", "low", "high"),
    "number": ("p", "low", "high"),
    "quantity": ("p", "value"),
    "uri": ("p", "value"),
    "composite": ("p",),
}


def resource_indexes() -> list[IndexModel]:
    """The indexes of one resource type's collection (current versions)."""
    out = [
        IndexModel([("rid", ASCENDING)], name="rid", unique=True),
        IndexModel([("del", ASCENDING), ("rid", ASCENDING)], name="del_rid"),
        IndexModel([("lu", ASCENDING)], name="last_updated"),
        IndexModel([("pc", ASCENDING)], name="patient_compartment"),
    ]
    for table, cols in ENTRY_INDEXES.items():
        keys = [(f"x.{table}.{c}", ASCENDING) for c in cols]
        out.append(IndexModel(keys, name=f"x_{table}"))
    return out


HISTORY_INDEXES = [
    IndexModel(
        [("lu", DESCENDING), ("t", ASCENDING), ("i", ASCENDING), ("v", DESCENDING)],
        name="history_order",
    ),
    IndexModel([("t", ASCENDING), ("lu", DESCENDING)], name="type_updated"),
    IndexModel([("t", ASCENDING), ("i", ASCENDING), ("v", DESCENDING)], name="instance"),
]


#: the other collections beside their `_id`s: the authorization tables (auth.py: a grant's
#: tokens revoked together, a client's tokens on removal, the expired rows swept, failed
#: logins counted per name), the audit chain (audit.py: the records waiting to be expanded)
#: and the background jobs' (export.py, inbox.py, subscriptions.py)
OTHER_INDEXES = {
    "auth_token": [
        IndexModel([("grant", ASCENDING)], name="grant"),
        IndexModel([("client_id", ASCENDING)], name="client"),
    ],
    "auth_code": [IndexModel([("expires_at", ASCENDING)], name="expires")],
    "auth_launch": [IndexModel([("expires_at", ASCENDING)], name="expires")],
    "auth_jti": [IndexModel([("expires_at", ASCENDING)], name="expires")],
    "auth_failure": [
        IndexModel([("who", ASCENDING), ("at", ASCENDING)], name="who_at"),
        IndexModel([("at", ASCENDING)], name="at"),
    ],
    "audit_record": [IndexModel([("pending", ASCENDING)], name="pending", sparse=True)],
    "export_job": [IndexModel([("status", ASCENDING), ("created", ASCENDING)], name="status")],
    "inbox": [
        # the idempotency key (channel, sender, MSH-10) of the messages that hold one
        IndexModel([("key", ASCENDING)], name="key", unique=True, sparse=True),
        IndexModel([("channel", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)],
                   name="queue"),  # fmt: skip
    ],
    "subscription_event": [IndexModel([("at", ASCENDING)], name="at")],
}


def create(db: Database[dict[str, Any]]) -> None:
    """Every resource type's collection and the history, the authorization tables, the audit
    chain and the background jobs', with their indexes."""
    models = resource_indexes()
    for rtype in sorted(RESOURCE_TYPES):
        db[rtype].create_indexes(models)
    db["history"].create_indexes(HISTORY_INDEXES)
    for name, extra in OTHER_INDEXES.items():
        db[name].create_indexes(extra)
    # written first inside a transaction, where a sharded cluster cannot create a collection
    with suppress(CollectionInvalid):  # it exists (made by another process meanwhile)
        db.create_collection("audit_head")
