"""fhir-server serve | load | sweep | demo | backup | restore: the console script."""

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
    serve.add_argument("--tls-cert", type=Path, help="HTTPS: certificate chain (PEM)")
    serve.add_argument("--tls-key", type=Path, help="HTTPS: the certificate's private key (PEM)")
    load = sub.add_parser("load", help="load Bundle / NDJSON files (also .bz2, .gz)")
    load.add_argument("files", nargs="+", type=Path)
    load.add_argument("--database", type=Path)
    sweep = sub.add_parser("sweep", help="apply referral expiry and no-show deadlines once")
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
    args = parser.parse_args(argv)
    settings = Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        database=args.database,
        workers=getattr(args, "workers", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
    )
    if args.command == "serve":
        if bool(settings.tls_cert) != bool(settings.tls_key):
            parser.error("HTTPS needs both --tls-cert and --tls-key")
        return _serve(settings)
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args.command, settings.database, args.path)
    if args.command == "sweep":
        return _sweep(settings, args.now)
    if args.command == "demo":
        return _demo(settings)
    return _load(settings, args.files)


def _serve(settings: Settings) -> int:
    from .serve import serve

    return serve(settings)


def _backup_or_restore(command: str, database: Path, path: Path) -> int:
    from .storage.sqlite.backup import BackupError, backup, restore

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
