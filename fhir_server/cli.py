"""fhir-server serve | load | sweep | demo | audit verify: the console script."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the FHIR server (base URL /fhir)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--database", type=Path)
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    load = sub.add_parser("load", help="load Bundle / NDJSON files (also .bz2, .gz)")
    load.add_argument("files", nargs="+", type=Path)
    load.add_argument("--database", type=Path)
    sweep = sub.add_parser("sweep", help="apply referral expiry and no-show deadlines once")
    sweep.add_argument("--database", type=Path)
    sweep.add_argument("--now", help="the instant to sweep at (default: now)")
    demo = sub.add_parser("demo", help="load the demo consortium (hospitals, patients, referrals)")
    demo.add_argument("--database", type=Path)
    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="recompute the AuditEvent hash chain")
    verify.add_argument("--database", type=Path)
    args = parser.parse_args(argv)
    settings = Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        database=args.database,
        workers=getattr(args, "workers", None),
    )
    if args.command == "serve":
        return _serve(settings)
    if args.command == "sweep":
        return _sweep(settings, args.now)
    if args.command == "demo":
        return _demo(settings)
    if args.command == "audit":
        return _audit_verify(settings)
    return _load(settings, args.files)


def _serve(settings: Settings) -> int:
    from .serve import serve

    return serve(settings)


def _sweep(settings: Settings, at: str | None) -> int:
    from .app import open_services
    from .referral.sweep import sweep

    services = open_services(settings)
    try:
        for change in sweep(services, at):
            print(change)
    finally:
        services.close()
    return 0


def _demo(settings: Settings) -> int:
    from .app import open_services
    from .referral.demo import describe, load_demo

    services = open_services(settings)
    try:
        print(describe(load_demo(services)), file=sys.stderr)
    finally:
        services.close()
    return 0


def _audit_verify(settings: Settings) -> int:
    """Exit 0 with "ok: N events" when the chain holds, 1 naming the first broken link."""
    from .audit.chain import verify
    from .storage.sqlite import SqliteStore

    if not settings.database.exists():
        print(f"error: no database at {settings.database}", file=sys.stderr)
        return 2
    store = SqliteStore(settings.database, settings.lock_timeout_seconds)
    try:
        count, broken = verify(store.reader().conn)
    finally:
        store.close()
    if broken is not None:
        print(f"broken: {broken} (after {count} good events)")
        return 1
    print(f"ok: {count} events")
    return 0


def _load(settings: Settings, files: list[Path]) -> int:
    from tqdm import tqdm

    from .app import open_services
    from .loader import load

    services = open_services(settings)
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
