"""One Settings object, read from FHIR_SERVER_* environment variables and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database: Path = Path("fhir.db")
    #: extra conformance resources (our IG) loaded at start-up
    profiles_dir: Path = Path(__file__).resolve().parent.parent / "profiles"
    #: our CodeSystems and ValueSets, loaded at start-up
    terminology_dir: Path = Path(__file__).resolve().parent.parent / "terminology"
    max_body_bytes: int = 50 * 1024 * 1024
    default_count: int = 20
    max_count: int = 1000
    #: conditional delete of several matches (HAPI: off by default)
    allow_multiple_delete: bool = False
    #: public base URL override, e.g. behind a proxy; default: taken from the request
    public_base_url: str | None = None
    #: seconds a write waits for the database lock held by another process before it
    #: answers 503 with Retry-After
    lock_timeout_seconds: float = 10.0
    #: hosts (comma-separated) the server answers for when public_base_url is unset, besides
    #: `host`; links are built from the Host / Forwarded headers only for these; `*`: any
    allowed_hosts: str = "127.0.0.1,localhost,testserver"
    #: seconds a client may take to send a request head, or pause while sending a body (408)
    read_timeout_seconds: int = 30
    #: open connections at most (per worker); requests beyond get 503
    max_connections: int = 1000
    #: server processes sharing the database (SQLite WAL: many readers, one writer at a time)
    workers: int = 1
    #: `serve` loads the demo consortium (referral/demo/) into a database without Patients
    demo_on_empty: bool = True
    #: referral workflow: hours a requested/received referral Task may wait before it expires
    referral_response_hours: int = 72
    #: hours after Appointment.start before an accepted referral counts as a no-show
    no_show_grace_hours: int = 24
    #: days after a downward referral completes at which follow-up Tasks fall due
    follow_up_days: str = "7,30,90"
    #: days after a referral Task ended (completed, rejected, cancelled, failed: its
    #: lastModified) during which the other organization still sees that patient's record
    referral_access_days: int = 30
    #: remote consultation: minutes an unanswered consultation request may wait, by its
    #: ServiceRequest.priority (routine 普通, urgent 加急, stat 急会诊), before it expires
    consultation_response_minutes: str = "routine=2880,urgent=240,stat=30"
    #: minutes between runs of the referral (and consultation) sweep in the server (0: never)
    sweep_minutes: int = 15
    #: HTTPS: the server's certificate chain (PEM) and its private key; both or neither
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: `on` (the default): FHIR requests need a bearer token (401 without; the probes,
    #: metadata and SMART discovery stay open). `off`: for local development and test
    #: harnesses only: a request without a token is served anonymously with full access
    #: (said in the log and in the CapabilityStatement); a token that is sent is checked.
    auth: str = "on"
    #: seconds a worker process trusts an access token it found live without looking again
    #: (auth/cache.py): the bound within which a revocation reaches every worker; 0: look up
    #: the token on every request
    token_cache_seconds: float = 2.0
    #: the audit trail (fhir_server/audit): a hash-chained record of every REST access and
    #: security event, expanded into searchable AuditEvents in the background (README, "Audit
    #: trail"); `false` turns it off
    audit: bool = True
    # --- R4 Subscriptions (README "Subscriptions") ---
    #: rest-hook endpoints on loopback and private addresses are allowed (tests, single-host
    #: deployments); link-local and cloud metadata addresses never are
    subscription_allow_private: bool = False
    #: a rest-hook notification is tried again this many times after a failure, waiting
    #: retry_seconds, then twice that, and so on; then the Subscription's status is `error`
    subscription_retries: int = 3
    subscription_retry_seconds: float = 2.0
    #: seconds a rest-hook endpoint may take to answer (connect and response)
    subscription_timeout_seconds: float = 5.0
    # --- the patient-centred data centre (README "Patient index", "Bulk Data export") ---
    #: Patient.identifier systems holding the national ID (居民身份证号, GB 11643), comma-separated
    national_id_systems: str = "https://yilian.health/fhir/sid/resident-id"
    #: Patient/$match: a score at or above each grades certain, probable, possible (lower
    #: scores are not returned)
    match_certain: float = 0.95
    match_probable: float = 0.70
    match_possible: float = 0.45
    #: Bulk Data export: the folder of the NDJSON files (default: `<database>.exports` beside
    #: the database), hours a finished export's files stay, resources between checkpoints (a
    #: job interrupted by a restart resumes from the last one)
    export_dir: Path | None = None
    export_retention_hours: float = 24.0
    export_batch: int = 5000
    #: patient identifier systems of the integrations (HL7 v2 PID-3.4, DICOM Issuer of Patient
    #: ID): `AUTHORITY=system,...`; an authority not listed gets a system derived from its
    #: name (integrations/patients.py)
    identifier_systems: str = ""
    #: DICOM (integrations/dicom): the instance store, a directory tree of Part-10 files and
    #: its index; default: `<database>.dicom` beside the database
    dicom_storage: Path | None = None
    #: `serve` also runs the DIMSE service (`serve --dicom`), in a process of its own
    dicom_listen: bool = False
    #: our AE title and DIMSE port (`dicom listen`, `serve --dicom`)
    dicom_ae_title: str = "FHIRSERVER"
    dicom_port: int = 11112
    #: calling AE titles accepted (comma-separated); empty: any
    dicom_allowed_aets: str = ""
    #: C-MOVE destinations we send to: `AET=host:port,...`
    dicom_move_destinations: str = ""
    #: PACS we query and pull from (`dicom pull --from AET`): `AET=host:port,...`
    dicom_peers: str = ""
    #: associations served at once; further ones are rejected (A-ASSOCIATE-RJ, transient)
    dicom_max_associations: int = 20
    #: a web viewer's study URL, `{study}` standing for the StudyInstanceUID (e.g. OHIF's
    #: `http://viewer/viewer?StudyInstanceUIDs={study}`): ImagingStudy then names an IHE IID
    #: Endpoint that opens it
    dicom_viewer_url: str = ""
    #: HL7 v2 (integrations/hl7v2): `serve` also runs the MLLP listener (`serve --hl7`), in a
    #: process of its own
    hl7_listen: bool = False
    #: where the MLLP listener accepts connections (`hl7 listen`, `serve --hl7`)
    hl7_host: str = "127.0.0.1"
    hl7_port: int = 2575
    #: a larger message is refused (AR) without being read into memory
    hl7_max_message_bytes: int = 10 * 1024 * 1024
    #: seconds a started message may pause between bytes before its connection is closed
    hl7_read_timeout_seconds: float = 30.0
    #: open MLLP connections at most; further ones are closed at once
    hl7_max_connections: int = 1024
    #: original-mode ACKs: `commit` (AA once the message is in the inbox; a mapping failure
    #: is kept for replay) or `mapped` (the ACK waits for the mapping: AA, or AE naming the
    #: field)
    hl7_ack_mode: str = "commit"
    #: the listener's process maps the inbox into FHIR (false: receive only, e.g. while a
    #: mapping fix is prepared; `hl7 replay --status received` maps later)
    hl7_map: bool = True
    #: charset of messages whose MSH-18 is empty (e.g. `GBK`); empty: UTF-8, else GB18030
    hl7_charset: str = ""
    #: UTC offset of v2 times sent without one (FHIR needs an offset on every time of day)
    hl7_timezone: str = "+08:00"
    #: sending facilities (MSH-4) as the Organizations they are: `FACILITY=Organization/id,...`;
    #: a facility not listed becomes an Organization of its own (by identifier)
    hl7_facilities: str = ""
    # --- the video consultation room (fhir_server/consultation/room) ---
    #: seconds an `Appointment/$join` token admits its participant to the signalling socket
    consult_token_seconds: int = 300
    #: the ICE servers handed to the browsers: a JSON array of RTCIceServer (W3C WebRTC
    #: §4.2.1), STUN/TURN URLs and TURN credentials; none needed on one LAN
    consult_ice_servers: str = "[]"
    #: participants of one room at most (a mesh: every browser sends to every other)
    consult_max_peers: int = 6
    #: the largest signalling message (bytes); a larger one closes the socket (1009)
    consult_message_bytes: int = 65536
    #: the largest recording a browser may upload (bytes); a larger one gets 413
    consult_recording_bytes: int = 100 * 1024 * 1024

    def to_env(self) -> dict[str, str]:
        """The FHIR_SERVER_* variables that reproduce these settings in another process."""
        return {
            f"FHIR_SERVER_{f.name.upper()}": str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Defaults, then FHIR_SERVER_<FIELD> environment variables, then explicit overrides."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"FHIR_SERVER_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _coerce(type_name: Any, raw: str) -> Any:
    name = str(type_name)
    if name == "int":
        return int(raw)
    if name == "float":
        return float(raw)
    if name == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name in ("Path", "Path | None"):
        return Path(raw)
    return raw
