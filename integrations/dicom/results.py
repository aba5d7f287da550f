"""Query results as DICOM JSON (PS3.18 Annex F), the attributes of each level as kept by the
index plus those computed from it (PS3.4 C.3.4: numbers of related series and instances,
ModalitiesInStudy); C-FIND turns them into datasets."""

from __future__ import annotations

from typing import Any

import orjson

from .attributes import PATIENT_LEVEL, QIDO_DEFAULT, hex_tag
from .storage.index import Index

Json = dict[str, Any]


def wanted(level: str, include: set[int] | None, everything: bool) -> set[str] | None:
    """The tags (as 8 hex digits) to return: the level's defaults plus `include`; None for all
    that is kept (includefield=all)."""
    if everything:
        return None
    return {hex_tag(t) for t in (*QIDO_DEFAULT[level], *(include or ()))}


def _pick(attrs: Json, keep: set[str] | None) -> Json:
    return dict(attrs) if keep is None else {k: v for k, v in attrs.items() if k in keep}


def studies(index: Index, rows: list[tuple[Any, ...]], keep: set[str] | None, base: str) -> list:
    counts = index.counts([r[0] for r in rows])
    out = []
    for uid, attrs, _rid in rows:
        item = _pick(orjson.loads(attrs), keep)
        series, instances, modalities = counts.get(uid, (0, 0, ""))
        computed = {
            "00080061": _cs(modalities.split("\\") if modalities else []),
            "00201206": {"vr": "IS", "Value": [series]},
            "00201208": {"vr": "IS", "Value": [instances]},
            "00081190": {"vr": "UR", "Value": [f"{base}/studies/{uid}"]},
        }
        item.update({k: v for k, v in computed.items() if keep is None or k in keep})
        out.append(item)
    return out


def series(
    index: Index, rows: list[tuple[Any, ...]], keep: set[str] | None, base: str, across: bool
) -> list[Json]:
    """Series rows; `across`: a search of all studies, which returns the study's attributes
    too (PS3.18 §10.6.3.3.2)."""
    counts = index.series_counts([r[0] for r in rows])
    out = []
    for uid, study_uid, attrs, study_attrs in rows:
        item = _pick(orjson.loads(attrs), keep)
        if across:
            item.update(_pick(orjson.loads(study_attrs), keep))
        item["0020000D"] = {"vr": "UI", "Value": [study_uid]}
        computed = {
            "00201209": {"vr": "IS", "Value": [counts.get(uid, 0)]},
            "00081190": {"vr": "UR", "Value": [f"{base}/studies/{study_uid}/series/{uid}"]},
        }
        item.update({k: v for k, v in computed.items() if keep is None or k in keep})
        out.append(_sorted(item))
    return out


def instances(
    rows: list[tuple[Any, ...]], keep: set[str] | None, base: str, across: str | None
) -> list[Json]:
    """Instance rows; `across`: "study" or "all" add the series' (and study's) attributes."""
    out = []
    for uid, series_uid, study_uid, attrs, series_attrs, study_attrs, _ts in rows:
        item = _pick(orjson.loads(attrs), keep)
        if across in ("study", "all"):
            item.update(_pick(orjson.loads(series_attrs), keep))
        if across == "all":
            item.update(_pick(orjson.loads(study_attrs), keep))
        item["0020000D"] = {"vr": "UI", "Value": [study_uid]}
        item["0020000E"] = {"vr": "UI", "Value": [series_uid]}
        url = f"{base}/studies/{study_uid}/series/{series_uid}/instances/{uid}"
        if keep is None or "00081190" in keep:
            item["00081190"] = {"vr": "UR", "Value": [url]}
        out.append(_sorted(item))
    return out


def patients(rows: list[tuple[Any, ...]]) -> list[Json]:
    keep = {hex_tag(t) for t in PATIENT_LEVEL} | {"00080005"}
    return [_sorted(_pick(orjson.loads(attrs), keep)) for _pid, _issuer, attrs in rows]


def _cs(values: list[str]) -> Json:
    return {"vr": "CS", "Value": values} if values else {"vr": "CS"}


def _sorted(item: Json) -> Json:
    return dict(sorted(item.items()))
