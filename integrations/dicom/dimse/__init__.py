"""DIMSE (PS3.7) with pynetdicom: the SCP (listen.py, handlers in scp.py) and the SCU that
pulls studies from a PACS (pull.py)."""
