"""Operations: importing this package registers every operation the server offers."""

from . import terminology, validate  # noqa: F401
