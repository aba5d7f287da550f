"""C-FIND and QIDO-RS matching (PS3.4 C.2.2.2) compiled to SQL over the index: single value,
wildcard (`*`, `?`), range (dates and times), UID list and universal matching; person names
match any component group, case-insensitively (as Orthanc's default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .index import Query

#: the columns each level's rows carry, in order (results.py reads them by position)
STUDY_COLUMNS = "st.uid, st.attrs, st.resource_id"
SERIES_COLUMNS = "se.uid, se.study_uid, se.attrs, st.attrs"
IMAGE_COLUMNS = "i.uid, i.series_uid, i.study_uid, i.attrs, se.attrs, st.attrs, i.transfer_syntax"
PATIENT_COLUMNS = "st.patient_id, st.issuer, MAX(st.attrs)"
_TABLE = {"STUDY": "st", "SERIES": "se", "IMAGE": "i"}


@dataclass(frozen=True)
class Match:
    """One matching key: `kind` is exact | wildcard | range | list | name (a PN pattern)."""

    level: str
    column: str
    kind: str
    value: Any


def compile_query(
    level: str,
    matches: list[Match],
    limit: int | None = None,
    offset: int = 0,
    studies: tuple[str, ...] | None = None,
) -> Query:
    """The rows at `level` (PATIENT, STUDY, SERIES or IMAGE) that satisfy every match, in
    the order a viewer lists them; `studies` confines them to those studies."""
    where: list[str] = []
    args: list[Any] = []
    for m in matches:
        sql, values = _condition(m)
        where.append(sql)
        args.extend(values)
    if studies is not None:
        where.append(f"st.uid IN ({','.join('?' * len(studies))})" if studies else "0")
        args.extend(studies)
    joins = {
        "PATIENT": ("study st", PATIENT_COLUMNS, "GROUP BY st.patient_id, st.issuer",
                    "st.patient_id"),
        "STUDY": ("study st", STUDY_COLUMNS, "",
                  "st.study_date DESC, st.study_time DESC, st.uid"),
        "SERIES": ("series se JOIN study st ON st.uid = se.study_uid", SERIES_COLUMNS, "",
                   "se.study_uid, se.number, se.uid"),
        "IMAGE": ("instance i JOIN series se ON se.uid = i.series_uid"
                  " JOIN study st ON st.uid = i.study_uid", IMAGE_COLUMNS, "",
                  "i.series_uid, i.number, i.uid"),
    }  # fmt: skip
    source, columns, group, order = joins[level]
    if level != "IMAGE" and any(m.level == "IMAGE" for m in matches):
        source += " JOIN instance i ON i.study_uid = st.uid"
        if level == "SERIES":
            source += " AND i.series_uid = se.uid"
        group = group or f"GROUP BY {_TABLE[level]}.uid"
    if level in ("PATIENT", "STUDY") and any(m.level == "SERIES" for m in matches):
        source += " JOIN series se ON se.study_uid = st.uid"
        group = group or "GROUP BY st.uid"
    sql = f"SELECT {columns} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" {group} ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args.extend((limit, offset))
    return Query(sql, tuple(args))


def _condition(m: Match) -> tuple[str, list[Any]]:
    if m.column == "modalities":  # ModalitiesInStudy: some series of the study has one
        values = list(m.value) if m.kind == "list" else [m.value]
        marks = ",".join("?" * len(values))
        return (
            f"EXISTS (SELECT 1 FROM series ms WHERE ms.study_uid = st.uid"
            f" AND ms.modality IN ({marks}))",
            values,
        )
    column = f"{_TABLE[m.level]}.{m.column}"
    if m.kind == "exact":
        return f"{column} = ?", [m.value]
    if m.kind == "list":
        return f"{column} IN ({','.join('?' * len(m.value))})", list(m.value)
    if m.kind == "wildcard":
        return f"{column} GLOB ?", [_glob(m.value)]
    if m.kind == "name":  # any component group: '=A^B=甲^乙=' against '*=<pattern>=*'
        return f"('=' || {column} || '=') GLOB ?", ["*=" + _glob(m.value) + "=*"]
    if m.kind == "range":
        low, high = m.value
        parts, values = [], []
        if low:
            parts.append(f"{column} >= ?")
            values.append(low)
        if high:
            parts.append(f"{column} <= ?")
            values.append(high + "\uffff")  # a bound with fewer digits covers its whole day
        return (" AND ".join(parts) or "1"), values
    raise ValueError(m.kind)


def _glob(pattern: str) -> str:
    """DICOM wildcards as a GLOB pattern: `*` and `?` are the same; `[` is literal."""
    return pattern.replace("[", "[[]")
