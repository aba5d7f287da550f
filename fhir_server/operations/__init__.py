"""Operations: importing these modules registers every operation the server offers."""

from .. import slip, stats
from ..workflow import referral
from . import terminology, validate

__all__ = ["referral", "slip", "stats", "terminology", "validate"]
