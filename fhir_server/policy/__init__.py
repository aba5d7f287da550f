"""Authorization policy: SMART scopes (scopes.py), the decision point (decide.py) and its
enforcement in the interactions (enforce.py). Core, next to search: it imports no feature."""
