"""fhir-server serve | load | sweep | demo | backup | restore | client | user | launch |
audit verify | export, and the commands of installed plugins (plugins.py: dicom, hl7): the
console script."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plugins import plugins
from .settings import Settings

if TYPE_CHECKING:
    from .storage.contract import Store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the FHIR server (base URL /fhir)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--database", type=Path)
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    serve.add_argument("--tls-cert", type=Path, help="HTTPS: certificate chain (PEM)")
    serve.add_argument("--tls-key", type=Path, help="HTTPS: the certificate's private key (PEM)")
    load = sub.add_parser("load", help="load Bundle / NDJSON files (also .bz2, .gz)")
    load.add_argument("files", nargs="+", type=Path)
    load.add_argument("--database", type=Path)
    sweep = sub.add_parser("sweep", help="apply referral and consultation deadlines once")
    sweep.add_argument("--database", type=Path)
    sweep.add_argument("--now", help="the instant to sweep at (default: now)")
    demo = sub.add_parser("demo", help="load the demo consortium (hospitals, patients, referrals)")
    demo.add_argument("--database", type=Path)
    backup = sub.add_parser("backup", help="copy the database to PATH, also while it serves")
    backup.add_argument("path", type=Path)
    backup.add_argument("--database", type=Path)
    restore = sub.add_parser("restore", help="replace the (stopped) database with backup PATH")
    restore.add_argument("path", type=Path)
    restore.add_argument("--database", type=Path)
    migrate = sub.add_parser(
        "migrate", help="copy every version of a SQLite database into MongoDB (mongodb://...)"
    )
    migrate.add_argument("--from", dest="source", type=Path, required=True)
    migrate.add_argument("--to", dest="target", required=True, help="mongodb://host/db")
    _auth_commands(sub)
    reindex = sub.add_parser(
        "reindex", help="index stored resources again (after a SearchParameter changed)"
    )
    reindex.add_argument("types", nargs="*", help="resource types (default: every type)")
    reindex.add_argument("--database", type=Path)
    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="recompute the hash chain; check each AuditEvent against its record"
    )
    verify.add_argument("--database", type=Path)
    _export_command(sub)
    for plugin in plugins():
        if plugin.serve_options:
            plugin.serve_options(serve)
        if plugin.commands:
            plugin.commands(sub)
    args = parser.parse_args(argv)
    # a flag whose dest names a setting overrides it (flags win over the environment)
    settings = Settings.from_env(**{f.name: getattr(args, f.name, None) for f in fields(Settings)})
    if hasattr(args, "run"):  # a plugin's command
        from .app import open_services

        code: int = args.run(args, settings, open_services)
        return code
    if args.command == "serve":
        if bool(settings.tls_cert) != bool(settings.tls_key):
            parser.error("HTTPS needs both --tls-cert and --tls-key")
        return _serve(settings)
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args.command, settings.database, args.path)
    if args.command == "sweep":
        return _sweep(settings, args.now)
    if args.command == "migrate":
        return _migrate(settings, args.source, args.target)
    if args.command == "demo":
        return _demo(settings)
    if args.command in ("client", "user", "launch"):
        return _auth(settings, args)
    if args.command == "reindex":
        return _reindex(settings, args.types)
    if args.command == "audit":
        return _audit_verify(settings)
    if args.command == "export":
        return _export(settings, args)
    return _load(settings, args.files)


def _export_command(sub: Any) -> None:
    export = sub.add_parser("export", help="Bulk Data export from a running server, downloaded")
    export.add_argument("--url", help="FHIR base URL (default: http://HOST:PORT/fhir)")
    export.add_argument("--token", help="bearer token (default: $FHIR_SERVER_TOKEN)")
    level = export.add_mutually_exclusive_group()
    level.add_argument("--patients", action="store_true", help="Patient/$export: all patients")
    level.add_argument("--group", help="Group/ID/$export: the group's patients")
    export.add_argument("--type", help="resource types, comma-separated (_type)")
    export.add_argument("--since", help="only resources changed after this instant (_since)")
    export.add_argument("--type-filter", action="append", default=[],
                        help="Type?criteria, repeatable (_typeFilter)")  # fmt: skip
    export.add_argument("--out", type=Path, default=Path("export"), help="folder for the files")
    export.add_argument("--database", type=Path, help=argparse.SUPPRESS)  # talks HTTP only


def _export(settings: Settings, args: argparse.Namespace) -> int:

    from .bulk_client import ExportError, run

    base = args.url or settings.public_base_url or f"http://{settings.host}:{settings.port}/fhir"
    params = [(k, v) for k, v in (("_type", args.type), ("_since", args.since)) if v]
    params += [("_typeFilter", f) for f in args.type_filter]
    level = f"group/{args.group}" if args.group else "patient" if args.patients else "system"
    token = args.token or os.environ.get("FHIR_SERVER_TOKEN")
    try:
        manifest = run(base, args.out, token, level, params)
    except (ExportError, OSError) as exc:
        print(f"fhir-server export: {exc}", file=sys.stderr)
        return 1
    total = sum(item.get("count", 0) for item in manifest["output"])
    print(f"exported {total} resources in {len(manifest['output'])} files to {args.out} "
          f"(transactionTime {manifest['transactionTime']})", file=sys.stderr)  # fmt: skip
    return 0


def _auth_commands(sub: Any) -> None:
    """client add|list|remove, user add, launch: the SMART authorization server's data."""
    from .policy.decide import ROLES

    client = sub.add_parser("client", help="register, list or remove SMART client apps")
    csub = client.add_subparsers(dest="action", required=True)
    add = csub.add_parser("add", help="register a client; prints it as JSON")
    add.add_argument("--client-id", required=True)
    add.add_argument("--redirect-uri", action="append", default=[])
    how = add.add_mutually_exclusive_group(required=True)
    how.add_argument("--secret", help="confidential client (client_secret_basic); stored hashed")
    how.add_argument("--jwks", type=Path, help="JWKS file: private_key_jwt (backend services)")
    how.add_argument("--public", action="store_true", help="public client (PKCE only)")
    add.add_argument("--scope", help="scopes the client may be granted (space-separated)")
    add.add_argument("--trusted", action="store_true", help="no consent screen")
    add.add_argument(
        "--origin",
        action="append",
        help="browser origin the app runs on, for CORS (default: its redirect URIs' origins)",
    )
    add.add_argument(
        "--organization",
        help="Organization/ID a backend client acts for: it sees that hospital's patients",
    )
    csub.add_parser("list", help="registered clients as JSON")
    remove = csub.add_parser("remove", help="remove a client and revoke its tokens")
    remove.add_argument("client_id")
    user = sub.add_parser("user", help="add users (practitioners and patients)")
    usub = user.add_subparsers(dest="action", required=True)
    uadd = usub.add_parser("add", help="add or replace a user")
    uadd.add_argument("--username", required=True)
    uadd.add_argument("--password", required=True)
    link = uadd.add_mutually_exclusive_group(required=True)
    link.add_argument("--practitioner-role", help="PractitionerRole/ID (and so an Organization)")
    link.add_argument("--patient", help="Patient/ID")
    uadd.add_argument(
        "--role", action="append", choices=ROLES, default=[],
        help="auditor: reads the audit trail; break-glass: may read past the consortium rule "
        "in an emergency, giving a reason (X-Break-Glass-Reason)",
    )
    launch = sub.add_parser("launch", help="print a one-time EHR launch value")
    launch.add_argument("--client-id", required=True)
    launch.add_argument("--user", required=True)
    launch.add_argument("--patient")
    launch.add_argument("--encounter")
    for p in (add, *csub.choices.values(), uadd, launch):
        if not any(a.dest == "database" for a in p._actions):
            p.add_argument("--database", type=Path)


def _auth(settings: Settings, args: argparse.Namespace) -> int:
    from .auth import admin
    from .storage.select import open_store

    store = open_store(settings)
    auth = store.auth
    try:
        out: Any
        if args.command == "launch":
            out = admin.create_launch(auth, args.client_id, args.user, args.patient, args.encounter)
            print(out)
            return 0
        if args.command == "user":
            role = args.practitioner_role or args.patient
            out = admin.add_user(auth, args.username, args.password, role, args.role)
        elif args.action == "add":
            jwks = json.loads(args.jwks.read_text()) if args.jwks else None
            out = admin.add_client(
                auth, args.client_id, args.redirect_uri, args.secret, jwks, args.public,
                args.scope, args.trusted, args.origin, args.organization,
            )
        elif args.action == "list":
            out = auth.clients()
        elif not auth.remove_client(args.client_id):
            print(f"no such client: {args.client_id}", file=sys.stderr)
            return 1
        else:
            out = {"removed": args.client_id}
    except (admin.AdminError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _serve(settings: Settings) -> int:
    from .serve import serve

    return serve(settings)


def _backup_or_restore(command: str, database: Path, path: Path) -> int:
    from .storage.features import BackupError, backup, restore
    from .storage.select import mongo_url

    if mongo_url(database) is not None:
        print(f"fhir-server {command}: copies a SQLite database file; back up and restore a "
              "MongoDB database with MongoDB's tools: mongodump --uri URL --out DIR, "
              "mongorestore --uri URL DIR (README, MongoDB)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        if command == "backup":
            size = backup(database, path)
            print(f"backed up {database} to {path} ({size} bytes)", file=sys.stderr)
        else:
            version = restore(path, database)
            print(f"restored {database} from {path} (schema {version})", file=sys.stderr)
    except BackupError as exc:
        print(f"fhir-server {command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(settings: Settings, source: Path, target: str) -> int:
    """Every version with its history, the current ones indexed by the registry in use."""
    from .storage.select import mongo_url

    if mongo_url(target) is None:
        print("fhir-server migrate: --to must be a mongodb:// URL", file=sys.stderr)
        return 2
    if not source.exists():
        print(f"fhir-server migrate: no database at {source}", file=sys.stderr)
        return 2
    from .storage.select import open_store

    to = replace(settings, database=Path(target), auth="off", audit=False)
    return migrate_into(source, open_store(to), to)


def migrate_into(source: Path, target: Store, settings: Settings) -> int:
    """The copy itself, into an open MongoDB store (tests hand in one over mongomock)."""
    from .interactions.write import prepare
    from .model import literal
    from .model.validate import Validated
    from .services import LiveParts, Parts, Services
    from .storage.contract import Stored, Version
    from .storage.select import copy_sqlite

    services = Services(settings, target, LiveParts(Parts.load(settings), settings))

    def index(stored: Stored) -> Version:
        if stored.deleted or stored.json is None:
            return Version(stored, {}, None, {})
        made = prepare(services, stored.type, stored.id, Validated(literal.loads(stored.json)),
                       stored.version, stored.last_updated, stored.method)  # fmt: skip
        return Version(stored, made.index_rows, made.fulltext, made.composite)

    try:
        counts = copy_sqlite(source, target, index, time.time())
    except ValueError as exc:
        print(f"fhir-server migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        services.close()
    if counts["audit records"] is None:
        print("fhir-server migrate: the audit trail was not copied: it starts with a schema-4 "
              f"chain, which MongoDB does not hold; keep {source} to verify it",
              file=sys.stderr)  # fmt: skip
    done = ", ".join(f"{n} {what}" for what, n in counts.items() if n is not None)
    print(f"migrated {done} from {source}", file=sys.stderr)
    return 0


def _sweep(settings: Settings, at: str | None) -> int:
    from .app import open_services
    from .consultation.sweep import sweep as consultation_sweep
    from .referral.sweep import sweep

    services = open_services(settings)
    try:
        for change in [*sweep(services, at), *consultation_sweep(services, at)]:
            print(change)
    finally:
        services.close()
    return 0


def _demo(settings: Settings) -> int:
    from .app import load_demo, open_services

    services = open_services(settings)
    try:
        print(load_demo(services), file=sys.stderr)
    finally:
        services.close()
    return 0


def _audit_verify(settings: Settings) -> int:
    """Exit 0 with "ok: R records, E AuditEvents" when the trail holds, 1 naming the first
    break."""
    from .audit.chain import verify
    from .storage.select import mongo_url, open_store

    if mongo_url(settings.database) is None and not settings.database.exists():
        print(f"error: no database at {settings.database}", file=sys.stderr)
        return 2
    store = open_store(settings)
    try:
        found = verify(store.audit)
    finally:
        store.close()
    if found.broken is not None:
        print(f"broken: {found.broken} (after {found.records} good records)")
        return 1
    waiting = f" ({found.pending} records not expanded yet)" if found.pending else ""
    print(f"ok: {found.records} records, {found.events} AuditEvents{waiting}")
    return 0


def _reindex(settings: Settings, types: list[str]) -> int:
    from .app import open_services
    from .interactions.reindex import reindex
    from .spec import RESOURCE_TYPES

    unknown = [t for t in types if t not in RESOURCE_TYPES]
    if unknown:
        print(f"error: not resource types: {', '.join(unknown)}", file=sys.stderr)
        return 2
    services = open_services(settings)
    try:
        for rtype in types or sorted(RESOURCE_TYPES):
            count = reindex(services, rtype)
            if count:
                print(f"{rtype}: {count} reindexed")
    finally:
        services.close()
    return 0


def _load(settings: Settings, files: list[Path]) -> int:
    from tqdm import tqdm

    from .app import open_services, settle_collector
    from .loader import load

    services = open_services(settings)
    settle_collector()
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}/fhir"
    total = failed = 0
    started = time.perf_counter()

    def report(line: str) -> None:
        tqdm.write(f"failed: {line}", file=sys.stderr)

    try:
        with tqdm(files, unit="file", file=sys.stderr) as bar:
            for path in bar:
                done, bad = load(services, path, base, report)
                total += done
                failed += bad
                bar.set_postfix(resources=total, failed=failed)
    finally:
        services.close()
    seconds = time.perf_counter() - started
    print(
        f"loaded {total} entries, failed {failed} in {seconds:.1f} s "
        f"({total / max(seconds, 1e-9):.0f}/s)",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
