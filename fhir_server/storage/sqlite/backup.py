"""Online backup and restore of the database file with SQLite's backup API (sqlite.org/backup.html).

A backup copies every page in one step inside one read transaction: in WAL mode that is a
consistent snapshot (the last commit before it started) while the server goes on reading and
writing. A restore copies a verified backup into the database under an exclusive lock, which
it only gets when no other process (a running server above all) has the database open.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from .schema import MIGRATIONS

#: tables every database of ours has (schema.py migration 1)
_OUR_TABLES = {"resource", "history"}


class BackupError(Exception):
    """The backup or restore was refused; the message says why, for the operator."""


def backup(database: Path, target: Path) -> int:
    """Copy `database` to a new file `target`, consistent as of one commit, while other
    connections write. The copy is a single file in rollback-journal mode (no -wal beside it).
    Returns the copy's size in bytes."""
    if not database.exists():
        raise BackupError(f"no database at {database}")
    if target.exists():
        raise BackupError(f"{target} exists; a backup never overwrites a file")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with closing(_open(database, "rw")) as source, closing(sqlite3.connect(partial)) as copy:
            source.execute("PRAGMA query_only = ON")
            source.backup(copy)  # pages=-1: all pages in one step, one read transaction
            copy.execute("PRAGMA journal_mode = DELETE")
        os.replace(partial, target)  # a half-written backup never carries the final name
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {database} to {target} failed: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target.stat().st_size


def verify(path: Path) -> int:
    """The schema version of the database at `path` when it is one of ours, intact, and not
    newer than this server knows; else BackupError saying what is wrong."""
    if not path.is_file():
        raise BackupError(f"no backup at {path}")
    try:
        with closing(_open(path, "ro")) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            check = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a readable SQLite database: {exc}") from None
    if version < 1 or _OUR_TABLES - tables:
        raise BackupError(f"{path} is not a FHIR server database (no schema of ours)")
    if version > len(MIGRATIONS):
        raise BackupError(
            f"{path} has schema version {version}, newer than this server's {len(MIGRATIONS)}"
        )
    if check != ["ok"]:
        raise BackupError(f"{path} failed the integrity check: {'; '.join(check[:5])}")
    return version


def restore(source: Path, database: Path) -> int:
    """Replace the contents of `database` with the verified backup `source`; the server
    migrates an older schema at its next start. Refused while another connection has the
    database open: we take SQLite's exclusive lock (locking_mode EXCLUSIVE), which a running
    server's open connections deny, and hold it while copying. Returns the schema version."""
    version = verify(source)
    with closing(sqlite3.connect(database, isolation_level=None, timeout=0)) as target:
        try:
            target.execute("PRAGMA locking_mode = EXCLUSIVE")
            target.execute("BEGIN EXCLUSIVE")
            target.execute("COMMIT")  # the lock stays held until the connection closes
        except sqlite3.OperationalError as exc:
            raise BackupError(
                f"{database} is in use by another process (a running server?): {exc}; "
                "stop it before restoring"
            ) from None
        with closing(_open(source, "ro")) as backup_db:
            backup_db.backup(target)
    return version


def _open(path: Path, mode: str) -> sqlite3.Connection:
    """A connection to a database file that must exist (never creates an empty one)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)
