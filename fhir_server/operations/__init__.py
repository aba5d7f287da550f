"""Operations: importing this package registers every operation the server offers."""

from . import validate  # noqa: F401
