"""The mapper's batch path: messages received over MLLP while nothing maps them are then mapped
together (one inbox read, written in shared transactions, each message in a savepoint of its
own). One message refused part way through its writes, another that cannot be mapped at all:
each ends in status error with its error, writes nothing, and the others are mapped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mllp_harness import Harness, fields, listeners, sample

from fhir_server.errors import error
from fhir_server.interactions.hooks import Change, Effect
from fhir_server.services import Parts
from integrations.hl7v2.worker import CHANNEL, Mapper

#: what the refusing rule says (a feature's write hook refusing one resource)
REFUSAL = "MessageHeader of an A08 refused by the test's rule"


@pytest.fixture
def hl7_with(tmp_path: Path, parts: Parts) -> Iterator[Callable[..., Harness]]:
    yield from listeners(tmp_path, parts)


def refuse_a08(change: Change) -> Effect | None:
    raise error(422, "business-rule", REFUSAL)


def is_a08(resource: dict[str, Any]) -> bool:
    return bool((resource.get("eventCoding") or {}).get("code") == "A08")


def statuses(hl7: Harness) -> dict[str, tuple[str, str | None]]:
    """Control id -> (status, error) of every inbox record."""
    records = hl7.inbox.search(CHANNEL, limit=100)
    return {r.message_id: (r.status, r.error) for r in records}


def received(hl7: Harness, messages: list[bytes]) -> None:
    """Each message sent and acknowledged AA (the listener does not map: `hl7_map=False`)."""
    for message in messages:
        assert fields(hl7.send(message), "MSA")[1] == "AA"


def mapped(hl7: Harness) -> dict[str, int]:
    """The inbox mapped by a Mapper thread, all at once; the records by status."""
    mapper = Mapper(hl7.services)
    mapper.start()
    try:
        return hl7.wait_mapped()
    finally:
        mapper.stop()


def test_one_batch_maps_the_good_messages_and_records_each_failure_alone(
    hl7_with: Callable[..., Harness],
) -> None:
    hl7 = hl7_with(hl7_map=False)  # received and acknowledged; mapped below, all at once
    # the ORU with its first OBX-11 'Q': not a result status of HL7 table 0085
    bad = (sample("oru_r01_cbc.hl7").replace(b"LIS20240302-000123", b"LIS20240302-000999")
           .replace(b"JY20240302-0456", b"JY20240302-0999")
           .replace(b"3.5-9.5|H|||F|", b"3.5-9.5|H|||Q|"))  # fmt: skip
    messages = [sample("adt_a01_admit.hl7"), sample("adt_a08_update.hl7"), bad,
                sample("oru_r01_cbc.hl7")]  # fmt: skip
    received(hl7, messages)
    assert hl7.inbox.counts(CHANNEL)["received"] == 4
    # the A08 updates the Patient (address) and the Encounter (bed) first; its MessageHeader,
    # created after them, is refused: the updates must go back with it
    hl7.services.hooks.add_on_write(refuse_a08, ("MessageHeader",), is_a08)
    counts = mapped(hl7)
    assert counts["mapped"] == 2 and counts["error"] == 2

    found = statuses(hl7)
    assert found["ADT20240301-0001"] == ("mapped", None)
    assert found["LIS20240302-000123"] == ("mapped", None)
    status, text = found["ADT20240302-0007"]
    assert status == "error" and text is not None and REFUSAL in text
    status, text = found["LIS20240302-000999"]
    assert status == "error" and text is not None and "'Q' is not a result status" in text
    assert "OBX" in text  # where: the segment (ERR-2)

    # the A08 wrote nothing: the Patient and the Encounter are the A01's, version 1
    [patient] = hl7.search("Patient?identifier=0001234567")
    assert patient["meta"]["versionId"] == "1"
    assert patient["address"][0]["line"][0] == "文三路478号"  # the A08 says 莫干山路100号
    [encounter] = hl7.search("Encounter?identifier=ZY2024030100123")
    assert encounter["meta"]["versionId"] == "1"
    assert "0301" in str(encounter["location"]) and "0305" not in str(encounter["location"])
    # the A01 and the good ORU: one MessageHeader each; the failed two wrote none
    headers = hl7.search("MessageHeader?_count=50")
    assert sorted(h["eventCoding"]["code"] for h in headers) == ["A01", "R01"]
    # the good ORU's report and its five results; nothing of the bad one's
    [report] = hl7.search("DiagnosticReport")
    assert "JY20240302-0456" in {i["value"] for i in report["identifier"]}
    assert len(hl7.search("Observation?_count=50")) == 5
    # every Provenance names what a mapped message wrote, none anything of the failed ones
    for provenance in hl7.search("Provenance?_count=50"):
        for target in provenance["target"]:
            hl7.read(target["reference"])  # each version it names exists


def test_a_message_the_database_refuses_whole_is_recorded_and_the_others_go_on(
    hl7_with: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure the database raises for the transaction as a whole (MongoDB aborts one on a
    server error, say a document over 16 MB; a savepoint cannot keep the other messages): the
    mapper writes the batch's messages one by one, the refused one ends in error with the
    database's words, and the ones after it are mapped (before, the batch was tried again
    for ever and nothing after it was mapped)."""
    hl7 = hl7_with(hl7_map=False)
    messages = [sample("adt_a01_admit.hl7"), sample("adt_a08_update.hl7"),
                sample("oru_r01_cbc.hl7")]  # fmt: skip
    received(hl7, messages)
    [a08] = [r for r in hl7.inbox.search(CHANNEL) if r.message_id == "ADT20240302-0007"]
    settle = hl7.inbox.settle

    def aborting(seq: int, status: str, *args: Any, session: Any = None, **kw: Any) -> None:
        if seq == a08.seq and session is not None:  # inside a transaction: it is undone
            raise RuntimeError("Transaction aborted: BSONObjectTooLarge")
        settle(seq, status, *args, session=session, **kw)

    monkeypatch.setattr(hl7.inbox, "settle", aborting)
    counts = mapped(hl7)
    assert counts["mapped"] == 2 and counts["error"] == 1
    found = statuses(hl7)
    assert found["ADT20240301-0001"] == ("mapped", None)
    assert found["LIS20240302-000123"] == ("mapped", None)  # after the refused one
    status, text = found["ADT20240302-0007"]
    assert status == "error" and text is not None and "BSONObjectTooLarge" in text
    # the A08's own transaction went back: the Patient is the A01's, version 1
    [patient] = hl7.search("Patient?identifier=0001234567")
    assert patient["meta"]["versionId"] == "1"
    assert sorted(h["eventCoding"]["code"] for h in hl7.search("MessageHeader")) == ["A01", "R01"]
