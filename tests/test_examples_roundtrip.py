"""Every example resource of the HL7 R4 package survives PUT then GET unchanged, value for value,
in JSON and through XML.

Only `meta.versionId` and `meta.lastUpdated` belong to the server; any other meta (profile,
security, tag) and every other element must come back as sent, and every number as it was
written (`"value": 4.10` is not `4.1`). The trees are compared with a parser of our own here
that keeps each number's text, so the comparison is exact and independent of the server's.
R4 types that R4B dropped (spec/resource_types.json, `missing_in_r4b`) are stored like the
others. The few examples that break R4's own rules are refused instead
(test_validation.py KNOWN_INVALID).

Through XML: the example's XML form (GET with `Accept: application/fhir+xml`) PUT under another
id reads back in JSON equal to the example. The narrative is XHTML either way, but XML has more
than one spelling of it (`&quot;` or `"`, `<br />` or `<br/>`), so narratives compare by their
canonical XML (C14N); everything else compares exactly.

The examples: tests/data/r4-examples (the search tests read them by name) and, for the rest,
tests/data/r4-examples-more.tar.xz (scripts/vendor_r4_examples.py writes both from the package).
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from lxml import etree
from test_validation import KNOWN_INVALID as INVALID  # break R4's own rules: refused

from fhir_server.app import build_app
from fhir_server.services import Parts

DATA = Path(__file__).parent / "data"
SINGLES = sorted((DATA / "r4-examples").glob("*.json"))
ARCHIVE = DATA / "r4-examples-more.tar.xz"
SERVER_META = ("versionId", "lastUpdated")
JSON = {"Content-Type": "application/fhir+json"}
XML = {"Content-Type": "application/fhir+xml"}



def _archived() -> dict[str, bytes]:
    with tarfile.open(ARCHIVE, "r:xz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


EXAMPLES: dict[str, bytes] = {p.name: p.read_bytes() for p in SINGLES} | _archived()
#: what the server sets itself: R4 subscription.html, the server activates a Subscription or,
#: its `end` (2021 in both examples) having passed, turns it off (test_subscriptions.py)
SERVER_SET: dict[str, dict[str, Any]] = {
    "Subscription-example.json": {"status": "off"},
    "Subscription-example-error.json": {"status": "off"},
}


def literal_tree(raw: bytes) -> Any:
    """The JSON tree with every number as ('number', its text): exact comparison."""
    return json.loads(raw, parse_float=lambda s: ("number", s), parse_int=lambda s: ("number", s))


def canonical_narratives(node: Any) -> Any:
    """The tree with each narrative `div` as canonical XML (C14N 1.0)."""
    if isinstance(node, dict):
        return {
            k: etree.tostring(etree.fromstring(v.encode()), method="c14n")
            if k == "div" and isinstance(v, str) else canonical_narratives(v)
            for k, v in node.items()
        }  # fmt: skip
    if isinstance(node, list):
        return [canonical_narratives(v) for v in node]
    return node


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in SERVER_META}
    if meta:
        out["meta"] = meta
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    """One server for every example (each has its own type and id), so the sweep is quick;
    without the audit trail, under which only the server writes AuditEvents (405, test_audit):
    the store's round trip of the AuditEvent examples is checked here."""
    services = make_services(tmp_path_factory.mktemp("examples") / "fhir.db", parts, audit=False)
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        yield c


def test_every_example_of_the_package_is_vendored() -> None:
    """The R4 package holds 741 files that are not conformance resources; less package.json,
    ig-r4.json and the 12 Bundles that repeat the definitions (Bundle-resources, -types, ...):
    727 examples."""
    assert len(EXAMPLES) == 727
    assert len(SINGLES) >= 300


#: the examples the search tests read (tests/data/r4-examples) run by default; the rest of the
#: package (the archive) is the long suite (`make test-slow`)
_DEFAULT = {p.name for p in SINGLES}
ROUNDTRIPS = [
    name if name in _DEFAULT else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(EXAMPLES)
]


@pytest.mark.parametrize("name", ROUNDTRIPS)
def test_example_roundtrips_put_then_get(server: TestClient, name: str) -> None:
    raw = EXAMPLES[name]
    original = {**literal_tree(raw), **SERVER_SET.get(name, {})}
    url = f"/fhir/{original['resourceType']}/{original['id']}"
    r = server.put(url, content=raw, headers=JSON)
    if name in INVALID:
        assert r.status_code == 400, r.text[:3000]
        assert INVALID[name] in [x for i in r.json()["issue"] for x in i.get("expression", ())]
        return
    assert r.status_code == 201, r.text[:3000]
    assert r.headers["etag"] == 'W/"1"'
    got = server.get(url, headers={"Accept": "application/fhir+json"})  # else a Binary is raw
    assert got.status_code == 200, got.text[:3000]
    body = literal_tree(got.content)
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"]
    assert without_server_meta(body) == without_server_meta(original)

    as_xml = server.get(url, headers={"Accept": "application/fhir+xml"})
    assert as_xml.status_code == 200, as_xml.text[:3000]
    assert as_xml.headers["content-type"] == "application/fhir+xml; charset=utf-8"
    other = "xml-" + original["id"][:60]
    rid = f'<id value="{other}"/>'.encode()
    xml = re.sub(rb'<id value="[^"]*"/>', rid, as_xml.content, count=1)
    r = server.put(f"/fhir/{original['resourceType']}/{other}", content=xml, headers=XML)
    assert r.status_code == 201, r.text[:3000]
    back = literal_tree(r.content)  # Prefer return=representation, the default: stored JSON
    assert back["id"] == other
    assert canonical_narratives(without_server_meta({**back, "id": original["id"]})) == (
        canonical_narratives(without_server_meta(original))
    )
