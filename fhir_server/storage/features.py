"""What only the SQLite backend has: `backup`/`restore` copy the database file. A MongoDB
database is backed up with MongoDB's own tools (mongodump, README); the CLI says so."""

from __future__ import annotations

from .sqlite.backup import BackupError, backup, restore

__all__ = ["BackupError", "backup", "restore"]
