"""Synthea bundles read back value for value: each stored resource equals its bundle entry after
the changes a transaction makes by rule (bundle.html#transaction): the server's id, its meta
stamps, and references to other entries (`urn:uuid:` fullUrls) or conditional references
(`Organization?identifier=…`) replaced by the `Type/id` they resolve to. Numbers compare as
written (Synthea's claims carry amounts such as `375.90`).

The vendored sample runs over HTTP in every run; the whole data set (../shared/synthea, 122
patients) with --run-slow.
"""

from __future__ import annotations

import bz2
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_examples_roundtrip import literal_tree, without_server_meta
from test_synthea import FULL, SAMPLE, ordered

JSON = {"Content-Type": "application/fhir+json"}


def expected_after(entry: dict[str, Any], rid: str, resolve: dict[str, str]) -> dict[str, Any]:
    """The entry's resource as the server must store it: the new id, every reference that
    names another entry or a search resolved to `Type/id`."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            ref = node.get("reference")
            if isinstance(ref, str) and ref in resolve:
                out["reference"] = resolve[ref]
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    resource: dict[str, Any] = walk(entry["resource"])
    resource["id"] = rid
    return resource


def conditional_references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and "?" in ref:
            yield ref
        for value in node.values():
            yield from conditional_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from conditional_references(value)


def stored(client: TestClient, ids: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """The stored resources by `Type/id`, fetched with `_id` searches of 100 ids each."""
    out = {}
    for rtype, rids in ids.items():
        for i in range(0, len(rids), 100):
            chunk = ",".join(rids[i : i + 100])
            r = client.get(f"/fhir/{rtype}?_id={chunk}&_count=100")
            assert r.status_code == 200, r.text[:2000]
            for entry in literal_tree(r.content).get("entry", []):
                out[f"{rtype}/{entry['resource']['id']}"] = entry["resource"]
    return out


def load_and_compare(client: TestClient, files: list[Path]) -> int:
    """POST each bundle as its raw bytes; compare every stored resource; returns how many."""
    compared = 0
    for path in files:
        raw = bz2.decompress(path.read_bytes())
        r = client.post("/fhir", content=raw, headers=JSON)
        assert r.status_code == 200, (path.name, r.text[:2000])
        bundle = literal_tree(raw)
        answers = r.json()["entry"]
        assert len(answers) == len(bundle["entry"])
        resolve: dict[str, str] = {}
        ids: dict[str, list[str]] = defaultdict(list)
        for entry, answer in zip(bundle["entry"], answers, strict=True):
            assert answer["response"]["status"].startswith("201"), (path.name, answer)
            rtype, rid = answer["response"]["location"].split("/")[:2]
            resolve[entry["fullUrl"]] = f"{rtype}/{rid}"
            ids[rtype].append(rid)
        for ref in {ref for e in bundle["entry"] for ref in conditional_references(e)}:
            found = client.get(f"/fhir/{ref}").json()
            assert found["total"] == 1, ref
            resolve[ref] = f"{ref.split('?')[0]}/{found['entry'][0]['resource']['id']}"
        got = stored(client, ids)
        for entry in bundle["entry"]:
            where = resolve[entry["fullUrl"]]
            want = expected_after(entry, where.split("/")[1], resolve)
            assert without_server_meta(got[where]) == want, (path.name, where)
            compared += 1
    return compared


def test_synthea_sample_reads_back_value_for_value(client: TestClient) -> None:
    files = ordered(SAMPLE)
    count = sum(len(literal_tree(bz2.decompress(p.read_bytes()))["entry"]) for p in files)
    assert load_and_compare(client, files) == count


@pytest.mark.slow
def test_synthea_full_data_reads_back_value_for_value(client: TestClient) -> None:
    if not FULL.is_dir():
        pytest.skip(f"{FULL} not present")
    assert load_and_compare(client, ordered(FULL)) == 92_114
