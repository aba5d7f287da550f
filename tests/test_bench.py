"""A tiny run of every benchmark, so that bench/ cannot rot (figures come from `make bench`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import run as bench

SAMPLE = Path(__file__).parent / "data" / "synthea"


@pytest.mark.slow  # the whole bench: `make test-slow`
def test_benchmark_runs_end_to_end_on_the_sample(tmp_path: Path) -> None:
    files = bench.ordered_files(SAMPLE, limit=1)
    assert [f.name[:2] for f in files] == ["0-", "0-", files[2].name[:2]]
    result = bench.run(files, clients=2, seconds=1, repeats=2, copies=2, audit_rounds=1,
                       match_patients=300, dicom_instances=20, dicom_studies=50,
                       rounds=2)  # fmt: skip
    assert result["ingest"]["failed"] == 0
    assert result["ingest"]["resources"] == result["baseline"]["resources"]
    assert result["read"]["requests"] > 0 and result["read"]["errors"] == 0
    with_token = result["read_with_token"]  # every read carried a backend-services token
    assert with_token["requests"] > 0 and with_token["errors"] == 0
    # two runs each, alternated; the fraction is the median of the per-round ratios
    assert len(result["read"]["rounds"]) == len(with_token["rounds"]) == 2
    assert with_token["fraction_of_read"] > 0
    assert with_token["cpu_us_per_request"] > 0 and with_token["cpu_of_read"] > 0
    assert "server CPU per read" in bench.table(result)
    assert "read by id with a token" in bench.table(result)
    assert set(result["search"]) == {name for name, _ in bench.SEARCHES}
    assert all(s["status"] == 200 for s in result["search"].values())
    assert "ingest (2 clients, audit trail on):" in bench.table(result)
    # issue 15's rows: every stored resource exported, $everything and $match timed
    export = result["export"]
    assert export["resources"] >= result["ingest"]["resources"] and export["per_second"] > 0
    assert result["everything"]["patients"] == 1 and result["everything"]["p95_ms"] > 0
    match = result["match"]
    assert match["patients"] == 301 and match["queries"] == 20
    # half the questions name a loaded person with the national ID or by pinyin and phone
    # (people.queries): found; a swapped birth date alone scores too little (0.35)
    assert match["answered_with_matches"] >= 10
    assert "system $export" in bench.table(result)
    # the scale step adds a copy of the patient bundle with new ids: twice the patients
    patients = result["ingest"]["resources"] - 778  # the hospital and practitioner batches
    assert result["scale"]["failed"] == 0 and result["scale"]["added"] == patients
    assert result["scale"]["resources"] - result["scale"]["resources_before"] == patients
    assert set(result["scale"]["search"]) == set(result["search"])
    # the audit trail's cost: the same loads with it on (the default) and off
    for mode in ("on", "off"):
        figures = result["audit"][mode]
        assert figures["req_per_s"] > 0 and figures["cpu_ms_per_read"] > 0
        assert figures["transaction_500_ms"] > 0 and figures["create_ms"] > 0
    assert "audit trail on vs off" in bench.table(result)
    dicom = result["dicom"]
    if "skipped" not in dicom:  # dcmtk installed (always in CI)
        assert dicom["store"]["ok"] and dicom["store"]["instances"] == 20
        assert dicom["imaging_study_lag_s"] is not None
        assert dicom["metadata"]["instances"] == 20 and dicom["qido"]["studies"] == 51
        assert "DICOM C-STORE" in bench.table(result)



@pytest.mark.slow  # a bench row end to end: `make test-slow`
def test_ingest_only_runs_the_ingest_row_alone(tmp_path: Path) -> None:
    """`--ingest-only --audit off`: the A/B runs of the ingest row, nothing else."""
    files = bench.ordered_files(SAMPLE, limit=1)
    result = bench.run(files, clients=1, seconds=1, repeats=1, ingest_only=True, audit=False)
    assert result["ingest"]["failed"] == 0 and result["ingest"]["audit"] is False
    assert result["ingest"]["resources"] == result["baseline"]["resources"]
    assert "read" not in result and "audit" not in result
    assert "ingest (2 clients, audit trail off):" in bench.table(result)

def test_copies_rewrite_ids_but_keep_shared_references() -> None:
    body = (
        b'{"fullUrl": "urn:uuid:085e81c0-7a95-ef02-16ef-aa1b4344deed", "reference": '
        b'"Organization?identifier=https://github.com/synthetichealth/synthea|'
        b'd5117822-5756-389d-9547-891a372d580f"}'
    )
    copy = bench.copy_of(body, 1)
    assert b"085e81c0-7a95-ef02-16ef-aa1b4344deed" not in copy
    assert b"synthea|d5117822-5756-389d-9547-891a372d580f" in copy
    assert bench.copy_of(body, 1) == copy != bench.copy_of(body, 2)


@pytest.mark.slow  # a bench row end to end: `make test-slow`
def test_python_read_load_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh machine has no wrk: the read load falls back to the asyncio client, whose
    result the table prints like wrk's (it once lacked `tool`: KeyError in make bench)."""
    files = bench.ordered_files(SAMPLE, limit=1)
    monkeypatch.setattr(bench.shutil, "which", lambda _name: None)
    with bench.server(tmp_path / "b.db") as (base, _proc):
        bench.ingest(base, files)
        ids = bench.sample_ids(base, ["Organization"], 5)
        result = asyncio.run(bench._read_load(base, ids, clients=2, seconds=0.5))
        fallback = bench.read_by_id(base, clients=2, seconds=0.5)
    assert result["requests"] > 0 and result["errors"] == 0
    assert fallback["tool"] == "asyncio client" and fallback["requests"] > 0
    assert set(fallback) >= {"req_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "clients"}


def test_the_hl7_row_runs_end_to_end() -> None:
    from bench import hl7

    result = hl7.run(count=24, connections=4)
    assert result["acknowledged"]["refused"] == 0 and result["receive_only"]["refused"] == 0
    assert result["mapped"]["counts"] == {"mapped": 24}
    # 12 ADT^A01 (a Patient and an Encounter each) and 12 ORU^R01 (a report, 10 results)
    assert result["mapped"]["clinical_resources"] == 12 * 2 + 12 * 11
    assert "mapped into FHIR" in hl7.table(result)


@pytest.mark.slow  # a bench row end to end: `make test-slow`
def test_the_subscriptions_row_runs_end_to_end() -> None:
    from bench import subscriptions

    result = subscriptions.run(writes=10, seconds=1, rounds=1, workers=2)
    assert result["latency"]["writes"] == 10 and result["latency"]["p95_ms"] > 0
    rates = result["writes_per_s"]
    assert rates["none"] > 0 and rates["with"] > 0 and rates["ratio"] > 0
    assert "websocket ping" in subscriptions.table(result)
