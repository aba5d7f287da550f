"""DICOM for the imaging centre: a DIMSE service (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET; the
`dicom listen` and `dicom pull` commands), the instance store, ImagingStudy kept current
through the core's write path, and DICOMweb for viewers. Its plugin (plugin.py, an entry point)
gives the app `register` and `router`; nothing in the core imports this package."""

from __future__ import annotations

from .service import dicom_of, register
from .web.routes import PREFIX, router

#: the paths the router serves that a bearer token governs (auth/bearer.py, auth/cors.py)
PREFIXES = (PREFIX,)

__all__ = ["PREFIXES", "dicom_of", "register", "router"]
