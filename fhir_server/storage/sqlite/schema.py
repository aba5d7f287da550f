"""Versioned SQLite schema migrations: each entry upgrades `PRAGMA user_version` by one."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: current versions, full history, and one index table per search-parameter type.
    # Value indexes end in rid, so lookups are covering and equal values come in rid order;
    # rid indexes continue with (param, value) to serve deletes and sort keys.
    """
    CREATE TABLE resource (
        rid INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        json BLOB,
        UNIQUE (type, id)
    );
    CREATE INDEX resource_type_updated ON resource (type, last_updated);
    -- (type, deleted) rows come in rowid order: the default search order
    CREATE INDEX resource_type ON resource (type, deleted);
    CREATE TABLE history (
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        method TEXT NOT NULL,
        json BLOB,
        PRIMARY KEY (type, id, version)
    ) WITHOUT ROWID;
    CREATE INDEX history_updated ON history (last_updated);
    CREATE INDEX history_type_updated ON history (type, last_updated);
    CREATE TABLE idx_string (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
        value TEXT NOT NULL, original TEXT, grp INTEGER);
    CREATE INDEX idx_string_value ON idx_string (type, param, value, rid);
    CREATE INDEX idx_string_rid ON idx_string (rid, param, value);
    CREATE TABLE idx_token (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
        system TEXT, code TEXT, text TEXT, grp INTEGER);
    CREATE INDEX idx_token_code ON idx_token (type, param, code, system, rid);
    CREATE INDEX idx_token_rid ON idx_token (rid, param, code);
    CREATE TABLE idx_reference (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
        target_type TEXT, target_id TEXT, url TEXT, grp INTEGER);
    CREATE INDEX idx_reference_target ON idx_reference (type, param, target_id, target_type, rid);
    CREATE INDEX idx_reference_url ON idx_reference (type, param, url, rid);
    CREATE INDEX idx_reference_rid ON idx_reference (rid, param, target_type, target_id);
    CREATE TABLE idx_date (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
        low TEXT NOT NULL, high TEXT NOT NULL, grp INTEGER);
    CREATE INDEX idx_date_low ON idx_date (type, param, low, high, rid);
    CREATE INDEX idx_date_rid ON idx_date (rid, param, low, high);
    CREATE TABLE idx_number (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
        low REAL NOT NULL, high REAL NOT NULL, grp INTEGER);
    CREATE INDEX idx_number_low ON idx_number (type, param, low, high, rid);
    CREATE INDEX idx_number_rid ON idx_number (rid, param, low);
    CREATE TABLE idx_quantity (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
        value REAL NOT NULL, system TEXT, code TEXT, unit TEXT, grp INTEGER);
    CREATE INDEX idx_quantity_value ON idx_quantity (type, param, value, rid);
    CREATE INDEX idx_quantity_rid ON idx_quantity (rid, param, value);
    CREATE TABLE idx_uri (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
        value TEXT NOT NULL, grp INTEGER);
    CREATE INDEX idx_uri_value ON idx_uri (type, param, value, rid);
    CREATE INDEX idx_uri_rid ON idx_uri (rid, param, value);
    -- _text and _content: FTS5 trigram (substrings, CJK included); rowid = resource rid
    CREATE VIRTUAL TABLE fulltext USING fts5(narrative, content, tokenize = 'trigram');
    """,
    # 2: history rows know when the next version replaced them, so `_at=T` (the versions
    # current at T) is `last_updated <= T AND (superseded_at IS NULL OR superseded_at > T)`,
    # read from one index instead of a correlated subquery per row. Both history indexes end
    # in superseded_at, so counting and filtering never touch the JSON.
    """
    ALTER TABLE history ADD COLUMN superseded_at TEXT;
    UPDATE history SET superseded_at = (
        SELECT n.last_updated FROM history n WHERE n.type = history.type
        AND n.id = history.id AND n.version > history.version ORDER BY n.version LIMIT 1);
    DROP INDEX history_updated;
    DROP INDEX history_type_updated;
    CREATE INDEX history_updated ON history (last_updated, superseded_at);
    CREATE INDEX history_type_updated ON history (type, last_updated, superseded_at);
    """,
    # 3: the SMART authorization server (fhir_server/auth). Secrets, passwords, codes, tokens
    # and launch values are stored only as hashes; `data` is the JSON of what each grants.
    """
    CREATE TABLE auth_client (client_id TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE auth_user (username TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE auth_code (hash TEXT PRIMARY KEY, client_id TEXT NOT NULL,
        data TEXT NOT NULL, expires_at REAL NOT NULL);
    CREATE TABLE auth_token (hash TEXT PRIMARY KEY, client_id TEXT NOT NULL,
        kind TEXT NOT NULL, data TEXT NOT NULL, expires_at REAL NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE auth_launch (hash TEXT PRIMARY KEY, client_id TEXT NOT NULL,
        data TEXT NOT NULL, expires_at REAL NOT NULL);
    -- RFC 7523 §3: a client assertion's jti may be used once within its lifetime
    CREATE TABLE auth_jti (issuer TEXT NOT NULL, jti TEXT NOT NULL, expires_at REAL NOT NULL,
        PRIMARY KEY (issuer, jti));
    -- the id_token signing key, made on first start
    CREATE TABLE auth_key (kid TEXT PRIMARY KEY, private_jwk TEXT NOT NULL);
    -- failed logins, for the rate limit per user and per client
    CREATE TABLE auth_failure (who TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX auth_failure_who ON auth_failure (who, at);
    """,
    # 4: the audit trail's hash chain (audit/chain.py): one row per AuditEvent version in the
    # order written, hash = SHA-256(previous hash || JCS of the AuditEvent); appended under the
    # write lock, in the transaction that stores the AuditEvent.
    """
    CREATE TABLE audit_chain (
        seq INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    """,
    # 5: the audit trail as compact records (audit/record.py): one row per audited interaction,
    # hash = SHA-256(previous hash || record bytes), chained after the last link of
    # audit_chain (the AuditEvents chained before records existed). A write's record commits
    # with the write; the AuditEvents are expanded from the records in the background, and
    # audit_pending lists the records not expanded yet (since when: unix seconds), so a restart
    # finds them.
    """
    CREATE TABLE audit_record (
        seq INTEGER PRIMARY KEY,
        record BLOB NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE audit_pending (
        seq INTEGER PRIMARY KEY,
        since REAL NOT NULL
    );
    """,
    # 6: Bulk Data export jobs (operations/export.py): kept here so that a job outlives the
    # process that ran it. `owner` is who may poll, download and delete; `principal` the caller
    # as at kick-off (the job is narrowed as they are); `progress` the last checkpoint (type,
    # row id, file sizes) a restarted job resumes from; a running job's worker renews `lease`.
    """
    CREATE TABLE export_job (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        principal TEXT NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        transaction_time TEXT NOT NULL,
        created REAL NOT NULL,
        worker TEXT,
        lease REAL,
        progress TEXT,
        manifest TEXT,
        error TEXT,
        expires REAL
    );
    CREATE INDEX export_job_status ON export_job (status, created);
    """,
    # 7: the conformance generation: one counter, moved by every version written of the
    # resources the server's Parts are built from (services.LiveParts), so each worker process
    # sees with one read per request that they changed. A trigger, so no write path can miss it.
    """
    CREATE TABLE conformance_generation (n INTEGER NOT NULL);
    INSERT INTO conformance_generation (n) VALUES (0);
    CREATE TRIGGER conformance_written AFTER INSERT ON history
    WHEN NEW.type IN ('StructureDefinition', 'ValueSet', 'CodeSystem', 'ConceptMap',
                      'SearchParameter')
    BEGIN
        UPDATE conformance_generation SET n = n + 1;
    END;
    """,
    # 8: the inbox of the integrations (storage/sqlite/inbox.py): messages from other systems
    # (HL7 v2 over MLLP), committed as received before they are acknowledged and mapped after.
    # `dedup` rows hold the idempotency key (channel, sender, message_id): a message sent
    # again is recognised; rows refused on receipt leave it free (a corrected resend counts).
    """
    CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        sender TEXT NOT NULL,
        message_id TEXT,
        received_at TEXT NOT NULL,
        remote TEXT,
        kind TEXT,
        status TEXT NOT NULL,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT,
        duplicates INTEGER NOT NULL DEFAULT 0,
        dedup INTEGER NOT NULL,
        meta TEXT NOT NULL,
        raw BLOB NOT NULL
    );
    CREATE UNIQUE INDEX inbox_key ON inbox (channel, sender, message_id) WHERE dedup = 1;
    -- the mapper's queue and the operations view's status filter, in arrival order
    CREATE INDEX inbox_status ON inbox (channel, status, seq);
    CREATE INDEX inbox_received ON inbox (channel, received_at);
    CREATE INDEX inbox_message ON inbox (channel, message_id);
    """,
    # 9: each version stored once: the current one in `resource` (which now keeps its
    # `method`), the ones it superseded in `history`; the view `versions` is both. Before, the
    # current version was also a history row: every write stored its JSON twice and updated
    # three more B-trees, most of the cost of a bulk create. The conformance generation
    # (migration 7) now moves with every version `resource` receives.
    """
    ALTER TABLE resource ADD COLUMN method TEXT NOT NULL DEFAULT '';
    UPDATE resource SET method = coalesce((SELECT h.method FROM history h
        WHERE h.type = resource.type AND h.id = resource.id AND h.version = resource.version), '');
    DELETE FROM history WHERE EXISTS (SELECT 1 FROM resource r WHERE r.type = history.type
        AND r.id = history.id AND r.version = history.version);
    -- system history in time order (the type-level one uses resource_type_updated)
    CREATE INDEX resource_updated ON resource (last_updated);
    CREATE VIEW versions AS
        SELECT type, id, version, last_updated, deleted, method, json, superseded_at
        FROM history
        UNION ALL
        SELECT type, id, version, last_updated, deleted, method, json, NULL FROM resource;
    DROP TRIGGER conformance_written;
    CREATE TRIGGER conformance_created AFTER INSERT ON resource
    WHEN NEW.type IN ('StructureDefinition', 'ValueSet', 'CodeSystem', 'ConceptMap',
                      'SearchParameter')
    BEGIN
        UPDATE conformance_generation SET n = n + 1;
    END;
    CREATE TRIGGER conformance_written AFTER UPDATE OF version ON resource
    WHEN NEW.type IN ('StructureDefinition', 'ValueSet', 'CodeSystem', 'ConceptMap',
                      'SearchParameter')
    BEGIN
        UPDATE conformance_generation SET n = n + 1;
    END;
    """,
    # 10: R4 Subscriptions (fhir_server/subscriptions): who created each one (the principal
    # its notifications are checked against at delivery; JSON as export_job.principal), and
    # the events of websocket subscriptions, which every worker process polls (`seq` after the
    # last it read) to reach the sockets bound to it; rows older than a minute are pruned.
    """
    CREATE TABLE subscription_owner (id TEXT PRIMARY KEY, principal TEXT NOT NULL);
    CREATE TABLE subscription_event (
        seq INTEGER PRIMARY KEY,
        subscription TEXT NOT NULL,
        origin TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX subscription_event_at ON subscription_event (at);
    """,
    # 11: UCUM canonical rows (search/ucum.py) for the units quantity search learnt to convert
    # then: calendar years and months, the customary mass and length units and body mass
    # index, so that quantities stored before compare in canonical units too. Other units
    # now convertible (an exponent or a quotient of them) take `fhir-server reindex`.
    """
    WITH u (code, factor, canonical) AS (VALUES ('a', 31557600.0, 's'),
        ('mo', 2629800.0, 's'), ('[lb_av]', 453.59237, 'g'), ('[oz_av]', 28.349523125, 'g'),
        ('[in_i]', 0.0254, 'm'), ('[ft_i]', 0.3048, 'm'), ('kg/m2', 1000.0, 'g/m2'))
    INSERT INTO idx_quantity (rid, type, param, value, system, code, unit, grp)
    SELECT q.rid, q.type, q.param || ':canonical', q.value * u.factor, q.system, u.canonical,
           NULL, q.grp
    FROM idx_quantity q JOIN u ON q.code = u.code
    WHERE q.system = 'http://unitsofmeasure.org' AND q.param NOT LIKE '%:canonical';
    """,
    # 12: the reference index by URL holds the rows that have one (absolute references and
    # canonicals) only: most references are relative, and their rows, all NULL there, cost
    # every write a B-tree insert and about 5% of the pages an HL7 v2 mapper commit writes.
    # Queries by URL say `url IS NOT NULL` (sqlite/search.py) so the planner may use it.
    """
    DROP INDEX idx_reference_url;
    CREATE INDEX idx_reference_url ON idx_reference (type, param, url, rid)
        WHERE url IS NOT NULL;
    """,
    # 13: R4's Observation combo-* parameters are unions of others (search/unions.py): their
    # rows are no longer written, a search reads their parts' rows; those written before go
    """
    DELETE FROM idx_token WHERE type = 'Observation' AND param GLOB 'combo-*';
    DELETE FROM idx_quantity WHERE type = 'Observation' AND param GLOB 'combo-*';
    """,
]

#: the resource types whose stored versions the Parts are built from (migration 7)
CONFORMANCE_TYPES = (
    "StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap", "SearchParameter",
)  # fmt: skip

#: value columns per index table, as search.index.index_rows fills them (plus `grp`, set
#: only on composite component rows)
INDEX_TABLES: dict[str, tuple[str, ...]] = {
    "string": ("value", "original"),
    "token": ("system", "code", "text"),
    "reference": ("target_type", "target_id", "url"),
    "date": ("low", "high"),
    "number": ("low", "high"),
    "quantity": ("value", "system", "code", "unit"),
    "uri": ("value",),
}


def migrate(conn: sqlite3.Connection) -> None:
    """Apply every migration newer than the database's user_version, each in its own transaction."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
