"""The apps' server side (issue 16): /apps/ serves the static apps and our CodeSystems'
displays, the demo registers the apps as public SMART clients, and what the apps need of the
policy: other hospitals' reserved-slot Schedules are shared, a patient reads their own referral
Tasks (not anyone else's), and the referral statistics are for staff, not patients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_services
from fastapi.testclient import TestClient
from smart import PASSWORD, auth_of
from test_policy_consortium import _serve, login, referral
from test_policy_enforce import ids

from apps import clients
from fhir_server.app import build_app, load_demo
from fhir_server.auth import admin
from fhir_server.services import Parts
from fhir_server.settings import Settings

WEB = Path(__file__).resolve().parent.parent / "apps" / "web"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    services = make_services(tmp_path_factory.mktemp("apps") / "fhir.db", parts, auth="on")
    with TestClient(build_app(services.settings, services), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "media"),
    [("workbench/index.html", "text/html"), ("patient/launch.html", "text/html"),
     ("workbench/main.js", "text/javascript"), ("lib/app.css", "text/css"),
     ("vendor/fhir-client.pure.min.js", "text/javascript")],
)  # fmt: skip
def test_the_apps_files_are_served_without_a_token(
    plain: TestClient, path: str, media: str
) -> None:
    r = plain.get(f"/apps/{path}")  # auth is on: /apps is not behind the bearer check
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(media)
    assert r.content == (WEB / path).read_bytes()
    # the pages run only their own origin's scripts; the browser asks again each time
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path", ["../__init__.py", "..%2F__init__.py", "lib", "nothing.html", "../../pyproject.toml"]
)
def test_nothing_outside_the_apps_files_is_served(plain: TestClient, path: str) -> None:
    r = plain.get(f"/apps/{path}")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


def test_codes_carry_our_codesystems_chinese_and_english_displays(plain: TestClient) -> None:
    codes = plain.get("/apps/codes.json").json()
    business = codes["https://yilian.health/fhir/CodeSystem/yl-referral-business-status"]
    # terminology/CodeSystem-yl-referral-business-status.json: booked = "Booked" / 已预约
    assert business["booked"] == {"en": "Booked", "zh": "已预约"}
    direction = codes["https://yilian.health/fhir/CodeSystem/yl-referral-direction"]
    assert direction["up"]["zh"] == "上转"
    # in the CodeSystem's order (the apps' choices list them so): no-capacity first, other last
    rejection = codes["https://yilian.health/fhir/CodeSystem/yl-referral-rejection-reason"]
    assert list(rejection)[0] == "no-capacity" and list(rejection)[-1] == "other"


def test_the_demo_registers_the_apps_as_public_smart_clients(tmp_path: Path, parts: Parts) -> None:
    services = make_services(tmp_path / "demo.db", parts, port=8123)
    with TestClient(build_app(services.settings, services)) as c:
        said = load_demo(c.app.state.services)  # type: ignore[attr-defined]
        store = auth_of(c).store
        workbench, patient = store.client("yl-workbench"), store.client("yl-patient")
    assert said is not None and "yl-workbench" in said
    assert workbench["redirect_uris"] == [
        "http://127.0.0.1:8123/apps/workbench/index.html",
        "http://localhost:8123/apps/workbench/index.html",
    ]
    # public (PKCE, no secret), and the user consents
    assert workbench["token_endpoint_auth_method"] == "none" and not workbench["trusted"]
    assert "user/*.cruds" in workbench["scope"] and "launch" in workbench["scope"].split()
    assert patient["token_endpoint_auth_method"] == "none"
    assert patient["scope"].split() == clients.APPS[1].scope.split()
    assert "patient/*.rs" in patient["scope"]


def test_the_origin_comes_from_the_public_base_url() -> None:
    settings = Settings(public_base_url="https://fhir.hospital.cn/fhir")
    assert clients.demo_origins(settings) == ["https://fhir.hospital.cn"]


# --- what the apps need of the policy ---------------------------------------------------------


def _schedule(sid: str, actor: str) -> dict[str, Any]:
    return {"resourceType": "Schedule", "id": sid, "active": True,
            "actor": [{"reference": actor}]}  # fmt: skip


def _team(tid: str, member: str, patient: str | None = None) -> dict[str, Any]:
    team: dict[str, Any] = {"resourceType": "CareTeam", "id": tid, "status": "active",
                            "participant": [{"member": {"reference": member}}]}  # fmt: skip
    if patient:
        team["subject"] = {"reference": patient}
    return team


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory, parts: Parts) -> Iterator[TestClient]:
    """test_policy_consortium's hospitals A and B, pa A's patient, pb B's; a referral Task of
    pa; Schedules of B's doctor and of patient pb; pa and pb sign in."""
    for c in _serve(tmp_path_factory.mktemp("apps-policy") / "fhir.db", parts):
        extra = [
            referral("t-pa", "requested", "submitted"),
            _schedule("s-drb", "PractitionerRole/drb"),
            _schedule("s-pb", "Patient/pb"),
            _team("team-b", "PractitionerRole/drb"),  # B's collaboration team (协作医生关系)
            _team("care-pb", "PractitionerRole/drb", patient="Patient/pb"),  # pb's care team
        ]
        for r in extra:
            assert c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r).status_code == 201
        store = auth_of(c).store
        admin.add_user(store, "pa", PASSWORD, "Patient/pa")
        admin.add_user(store, "pb", PASSWORD, "Patient/pb")
        yield c


def test_other_hospitals_schedules_are_shared_but_not_a_patients(consortium: TestClient) -> None:
    a = login(consortium, "dra")  # of hospital A; s-drb is B's doctor's, s-pb B's patient's
    assert ids(a.get("/fhir/Schedule")) == {"Schedule/s-drb"}
    assert a.get("/fhir/Schedule/s-drb").status_code == 200
    assert a.get("/fhir/Schedule/s-pb").status_code == 404
    b = login(consortium, "drb")
    assert ids(b.get("/fhir/Schedule")) == {"Schedule/s-drb", "Schedule/s-pb"}


def test_collaboration_teams_are_shared_but_not_a_patients_care_team(
    consortium: TestClient,
) -> None:
    """The consultation form invites a team of another hospital: a CareTeam naming no patient
    is shared like a doctor's Schedule; one about a patient stays with the patient's record."""
    a = login(consortium, "dra")
    assert ids(a.get("/fhir/CareTeam")) == {"CareTeam/team-b"}
    assert a.get("/fhir/CareTeam/care-pb").status_code == 404
    b = login(consortium, "drb")
    assert ids(b.get("/fhir/CareTeam")) == {"CareTeam/team-b", "CareTeam/care-pb"}


def test_a_patient_reads_their_own_referral_tasks_only(consortium: TestClient) -> None:
    pa, pb = login(consortium, "pa"), login(consortium, "pb")
    assert ids(pa.get("/fhir/Task")) == {"Task/t-pa"}
    assert pa.get("/fhir/Task/t-pa").status_code == 200
    assert ids(pb.get("/fhir/Task")) == set()
    assert pb.get("/fhir/Task/t-pa").status_code == 404
    assert ids(pb.get("/fhir/Task", params={"patient": "Patient/pa"})) == set()


def test_referral_statistics_are_for_staff_not_patients(consortium: TestClient) -> None:
    r = login(consortium, "dra").get("/fhir/ServiceRequest/$referral-stats")
    assert r.status_code == 200, r.text
    assert r.json()["resourceType"] == "Parameters"
    r = login(consortium, "pa").get("/fhir/ServiceRequest/$referral-stats")
    assert r.status_code == 403
    assert r.json()["issue"][0]["diagnostics"].endswith("not available to patients")

