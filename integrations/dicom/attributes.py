"""The attributes the store keeps per level and matches on (PS3.4 C.6 Q/R information models,
PS3.18 §10.6 QIDO-RS), as tags."""

from __future__ import annotations

from pydicom.datadict import keyword_for_tag, tag_for_keyword

#: kept per study (patient and study modules): returned by C-FIND and QIDO-RS at study level
STUDY = frozenset(
    {
        0x00080005, 0x00080020, 0x00080030, 0x00080050, 0x00080051, 0x00080090,
        0x00080201, 0x00081030, 0x00081032, 0x00081060, 0x00100010, 0x00100020,
        0x00100021, 0x00100024, 0x00100030, 0x00100040, 0x00101000, 0x00101001,
        0x00101002, 0x00101010, 0x00101020, 0x00101030, 0x00104000, 0x0020000D,
        0x00200010, 0x00321032, 0x00321060,
    }
)
#: kept per series (general series and equipment modules)
SERIES = frozenset(
    {
        0x00080021, 0x00080031, 0x00080060, 0x00080070, 0x00080080, 0x00081010,
        0x0008103E, 0x00081050, 0x00081070, 0x00081090, 0x00180015, 0x00181030,
        0x0020000E, 0x00200011, 0x00200060, 0x00400244, 0x00400245, 0x00400275,
    }
)
#: kept per instance (SOP common, general image, image pixel basics)
INSTANCE = frozenset(
    {
        0x00080008, 0x00080016, 0x00080018, 0x00080022, 0x00080023, 0x00080032,
        0x00080033, 0x00200013, 0x00280002, 0x00280004, 0x00280008, 0x00280010,
        0x00280011, 0x00280100,
    }
)

#: attribute -> (level, index column) for matching (the index keeps these as columns)
MATCHABLE: dict[int, tuple[str, str]] = {
    0x00100010: ("STUDY", "patient_name"),
    0x00100020: ("STUDY", "patient_id"),
    0x00100021: ("STUDY", "issuer"),
    0x00100030: ("STUDY", "birth_date"),
    0x00100040: ("STUDY", "sex"),
    0x0020000D: ("STUDY", "uid"),
    0x00080020: ("STUDY", "study_date"),
    0x00080030: ("STUDY", "study_time"),
    0x00080050: ("STUDY", "accession"),
    0x00200010: ("STUDY", "study_id"),
    0x00081030: ("STUDY", "description"),
    0x00080090: ("STUDY", "referring"),
    0x00080061: ("STUDY", "modalities"),  # ModalitiesInStudy: any of the study's series
    0x0020000E: ("SERIES", "uid"),
    0x00080060: ("SERIES", "modality"),
    0x00200011: ("SERIES", "number"),
    0x0008103E: ("SERIES", "description"),
    0x00080018: ("IMAGE", "uid"),
    0x00080016: ("IMAGE", "sop_class"),
    0x00200013: ("IMAGE", "number"),
}
#: the levels in order, and the level an attribute of each keeps its attributes at
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
PATIENT_LEVEL = frozenset({0x00100010, 0x00100020, 0x00100021, 0x00100030, 0x00100040})

#: PS3.18 Table 10.6.3-3..5: what QIDO-RS returns at each level without includefield
QIDO_DEFAULT = {
    "STUDY": (
        0x00080005, 0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090,
        0x00080201, 0x00081190, 0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x0020000D,
        0x00200010, 0x00201206, 0x00201208,
    ),
    "SERIES": (
        0x00080005, 0x00080060, 0x00080201, 0x0008103E, 0x00081190, 0x0020000E, 0x00200011,
        0x00201209, 0x00400244, 0x00400245, 0x00400275,
    ),
    "IMAGE": (
        0x00080005, 0x00080016, 0x00080018, 0x00080056, 0x00080201, 0x00081190, 0x00200013,
        0x00280010, 0x00280011, 0x00280100, 0x00280008,
    ),
}


def tag_of(name: str) -> int | None:
    """A tag from its keyword (`PatientID`) or 8 hex digits (`00100020`); None if neither."""
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    tag = tag_for_keyword(name)
    return int(tag) if tag is not None else None


def hex_tag(tag: int) -> str:
    return f"{tag:08X}"


def keyword(tag: int) -> str:
    return keyword_for_tag(tag) or hex_tag(tag)
