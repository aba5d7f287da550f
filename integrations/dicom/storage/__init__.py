"""The instance store: Part-10 files in a directory tree (files.py) and their index, one
SQLite file beside them (index.py). Together they are self-contained: copy the directory and
both come along."""
