"""The SQLite backend: schema and migrations (schema.py), the store with its write lock and
readers (store.py), and search compiled to SQL and executed (search.py). All SQL lives here."""

from .store import IndexRows, Session, SqliteStore, Stored, Version

__all__ = ["IndexRows", "Session", "SqliteStore", "Stored", "Version"]
