"""Named operations: the registry (registry.py) and the core's generic operations."""
