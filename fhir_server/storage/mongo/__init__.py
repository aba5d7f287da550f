"""The MongoDB backend (optional extra `fhir-server[mongodb]`): store.py (documents,
transactions), search.py (the query AST as filters), indexes.py, migrate.py (from SQLite)."""

from .store import MongoStore

__all__ = ["MongoStore"]
