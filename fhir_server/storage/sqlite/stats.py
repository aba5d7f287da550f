"""The referral statistics query (ServiceRequest/$referral-stats, defined and documented in
fhir_server/referral/stats.py): one SQL statement over the current Task and ServiceRequest rows.
The guide's URLs come in as parameters, so storage knows no feature's names."""

from __future__ import annotations

from typing import Any

from .store import Session

_ORG_OF = """COALESCE(
    CASE WHEN {ref} LIKE 'Organization/%' THEN {ref} END,
    (SELECT json_extract(pr.json, '$.organization.reference') FROM resource pr
     WHERE {ref} LIKE 'PractitionerRole/%' AND pr.type = 'PractitionerRole'
       AND pr.id = substr({ref}, 18) AND pr.deleted = 0))"""

_SQL = f"""
WITH task AS (
    SELECT t.rid, t.json AS tj, sr.json AS sj
    FROM resource t
    JOIN resource sr ON sr.type = 'ServiceRequest' AND sr.deleted = 0
        AND sr.id = substr(json_extract(t.json, '$.focus.reference'), 16)
    WHERE t.type = 'Task' AND t.deleted = 0
        AND json_extract(t.json, '$.focus.reference') LIKE 'ServiceRequest/%'
        AND json_extract(t.json, '$.partOf') IS NULL
        AND json_extract(t.json, '$.status') NOT IN ('draft', 'entered-in-error')
        AND (json_extract(t.json, '$.code') IS NULL OR EXISTS (
            SELECT 1 FROM json_each(t.json, '$.code.coding') c
            WHERE json_extract(c.value, '$.code') = 'fulfill'))
),
milestone AS (
    SELECT task.rid,
        json_extract(c.value, '$.valueCoding.code') AS code,
        json_extract(d.value, '$.valueDateTime') AS at
    FROM task, json_each(task.tj, '$.extension') e,
        json_each(e.value, '$.extension') c, json_each(e.value, '$.extension') d
    WHERE json_extract(e.value, '$.url') = :milestones
        AND json_extract(c.value, '$.url') = 'code'
        AND json_extract(d.value, '$.url') = 'dateTime'
),
times AS (
    SELECT rid,
        (SELECT at FROM milestone m WHERE m.rid = task.rid AND m.code = 'submitted'
         ORDER BY julianday(at) LIMIT 1) AS submitted_at,
        (SELECT min(julianday(at)) FROM milestone m
         WHERE m.rid = task.rid AND m.code IN ('decided', 'booked')) AS decided_jd
    FROM task
),
referral AS (
    SELECT task.rid,
        json_extract(tj, '$.status') AS status,
        (SELECT json_extract(c.value, '$.code') FROM json_each(tj, '$.businessStatus.coding') c
         WHERE json_extract(c.value, '$.system') = :business LIMIT 1) AS business,
        COALESCE(
            (SELECT json_extract(e.value, '$.valueCoding.code') FROM json_each(sj, '$.extension') e
             WHERE json_extract(e.value, '$.url') = :direction LIMIT 1),
            (SELECT json_extract(e.value, '$.valueCoding.code') FROM json_each(tj, '$.extension') e
             WHERE json_extract(e.value, '$.url') = :direction LIMIT 1)) AS direction,
        COALESCE(times.submitted_at, json_extract(tj, '$.authoredOn')) AS submitted_at,
        times.decided_jd,
        COALESCE({_ORG_OF.format(ref="json_extract(sj, '$.requester.reference')")},
                 {_ORG_OF.format(ref="json_extract(tj, '$.requester.reference')")}) AS source,
        COALESCE(
            (SELECT json_extract(p.value, '$.reference') FROM json_each(sj, '$.performer') p
             WHERE json_extract(p.value, '$.reference') LIKE 'Organization/%' LIMIT 1),
            (SELECT {_ORG_OF.format(ref="json_extract(p.value, '$.reference')")}
             FROM json_each(sj, '$.performer') p
             WHERE json_extract(p.value, '$.reference') LIKE 'PractitionerRole/%' LIMIT 1),
            {_ORG_OF.format(ref="json_extract(tj, '$.owner.reference')")}) AS target,
        (SELECT json_extract(c.value, '$.code')
         FROM json_each(sj, '$.category') k, json_each(k.value, '$.coding') c
         WHERE json_extract(c.value, '$.system') = :type LIMIT 1) AS rtype
    FROM task JOIN times ON times.rid = task.rid
),
counted AS (
    SELECT *,
        CASE :group_by
            WHEN 'source' THEN source WHEN 'target' THEN target
            WHEN 'type' THEN rtype WHEN 'month' THEN substr(submitted_at, 1, 7)
            ELSE '' END AS grp,
        status IN ('accepted', 'in-progress', 'completed', 'failed') AS is_accepted,
        julianday(submitted_at) AS submitted_jd
    FROM referral
    WHERE direction IN ('up', 'down', 'lateral') AND submitted_at IS NOT NULL
        AND (:low IS NULL OR julianday(submitted_at) >= julianday(:low))
        AND (:high IS NULL OR julianday(submitted_at) <= julianday(:high))
        AND (:organization IS NULL OR source = :organization OR target = :organization)
),
totals AS (
    SELECT grp, direction,
        count(*) AS submitted,
        sum(is_accepted) AS accepted,
        sum(status = 'rejected') AS rejected,
        sum(status = 'cancelled') AS cancelled,
        sum(status = 'completed') AS completed,
        sum(status = 'failed' AND business = 'no-show') AS no_show,
        sum(status = 'in-progress') AS in_progress,
        sum(status IN ('requested', 'received')) AS pending
    FROM counted GROUP BY grp, direction
),
decision AS (
    SELECT grp, direction, (decided_jd - submitted_jd) * 24.0 AS hours,
        row_number() OVER (PARTITION BY grp, direction
                           ORDER BY decided_jd - submitted_jd) AS n,
        count(*) OVER (PARTITION BY grp, direction) AS total
    FROM counted
    WHERE decided_jd IS NOT NULL AND (is_accepted OR status = 'rejected')
),
median AS (
    SELECT grp, direction, round(avg(hours), 2) AS hours
    FROM decision WHERE n IN ((total + 1) / 2, (total + 2) / 2)
    GROUP BY grp, direction
)
SELECT t.grp, t.direction, t.submitted, t.accepted, t.rejected, t.cancelled, t.completed,
    t.no_show, t.in_progress, t.pending, m.hours
FROM totals t LEFT JOIN median m ON m.grp = t.grp AND m.direction = t.direction
ORDER BY t.grp, t.direction
"""


def referral_stats_rows(session: Session, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(group key, direction, *counts, median hours) rows; see referral/stats.py."""
    return session.query(_SQL, params)  # type: ignore[arg-type]
