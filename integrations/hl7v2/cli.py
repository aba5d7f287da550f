"""fhir-server hl7 listen | send | replay | check, and `serve --hl7` (the listener in a process
of its own beside the HTTP workers, on the same database and settings)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fhir_server.plugins import Opener
from fhir_server.services import Services
from fhir_server.settings import Settings
from integrations import patients

from . import mllp
from .charset import CharsetError, codec_for, decode
from .listener import Listener
from .mapping.context import facilities
from .worker import CHANNEL, process

log = logging.getLogger("integrations.hl7v2")


def add_commands(sub: Any) -> None:
    hl7 = sub.add_parser("hl7", help="HL7 v2: the MLLP listener, sending, replay")
    cmds = hl7.add_subparsers(dest="hl7_command", required=True)
    listen = cmds.add_parser("listen", help="receive HL7 v2 over MLLP into the inbox, map it")
    listen.add_argument("--host", dest="hl7_host")
    listen.add_argument("--port", dest="hl7_port", type=int)
    listen.add_argument("--database", type=Path)
    listen.add_argument("--ack-mode", dest="hl7_ack_mode", choices=["commit", "mapped"],
                        help="original mode: AA once stored (commit) or once mapped")
    listen.add_argument("--receive-only", dest="hl7_map", action="store_const", const=False,
                        help="store and acknowledge, map later (`hl7 replay --status received`)")
    listen.set_defaults(run=listen_command)
    send = cmds.add_parser("send", help="send message files over MLLP, print the ACKs")
    send.add_argument("files", nargs="+", type=Path)
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=2575)
    send.add_argument("--timeout", type=float, default=30.0)
    send.set_defaults(run=send_command)
    replay = cmds.add_parser("replay", help="map inbox messages again (after a mapping fix)")
    replay.add_argument("--status", default="error", choices=["error", "received", "mapped"])
    replay.add_argument("--since", help="received at or after (ISO 8601, UTC)")
    replay.add_argument("--until", help="received before (ISO 8601, UTC)")
    replay.add_argument("--sender", help="FACILITY/APPLICATION as the inbox names it")
    replay.add_argument("--database", type=Path)
    replay.set_defaults(run=replay_command)
    check = cmds.add_parser("check", help="validate message files with hl7apy (strict)")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(run=check_command)


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--hl7", dest="hl7_listen", action="store_const", const=True,
                       help="also run the HL7 v2 MLLP listener (port: hl7_port)")
    serve.add_argument("--hl7-port", dest="hl7_port", type=int)


def wants_listener(settings: Settings) -> bool:
    return settings.hl7_listen


def logging_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- listen -----------------------------------------------------------------------------------


def check_settings(settings: Settings) -> None:
    """ValueError for settings the listener would trip over at its first message."""
    patients.check(settings)
    facilities(settings.hl7_facilities)
    if settings.hl7_ack_mode not in ("commit", "mapped"):
        raise ValueError(f"hl7_ack_mode: '{settings.hl7_ack_mode}' is not commit or mapped")
    if settings.hl7_charset and codec_for(settings.hl7_charset) is None:
        raise ValueError(f"hl7_charset: '{settings.hl7_charset}' names no known charset")
    if not re.fullmatch(r"[+-]\d\d:\d\d", settings.hl7_timezone):
        raise ValueError(f"hl7_timezone: '{settings.hl7_timezone}' is not like +08:00")


def listen_command(args: argparse.Namespace, settings: Settings, open_services: Opener) -> int:
    try:
        check_settings(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging_to_stderr()
    run_listener(open_services(settings), open_services)
    return 0


def run_listener(services: Services, opener: Opener) -> None:
    """Serve until SIGTERM or SIGINT (also `serve --hl7`'s process body); the mapper runs in
    a process of its own, which `opener` opens Services for."""
    logging_to_stderr()
    try:
        asyncio.run(_serve(services, opener))
    finally:
        services.close()


async def _serve(services: Services, opener: Opener) -> None:
    settings = services.settings
    listener = Listener(services, settings.hl7_map, opener)
    await listener.start(settings.hl7_host, settings.hl7_port)
    log.info("HL7 v2 MLLP listener on %s:%s (database %s, ACK %s, %s)", settings.hl7_host,
             settings.hl7_port, settings.database, settings.hl7_ack_mode,
             "mapping" if settings.hl7_map else "receive only")  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await listener.close()
    log.info("HL7 v2 listener stopped")


# --- send ------------------------------------------------------------------------------------


def messages_in(data: bytes) -> Iterator[bytes]:
    """The messages of a file: segments on lines (CR, LF or CRLF), a message at each line that
    starts with MSH. A CR is never part of a GB18030 character, so this is safe on bytes."""
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    for n, part in enumerate(text.split(b"\rMSH")):
        part = part.strip(b"\r")
        if part:
            yield b"MSH" + part if n else part


def show(reply: bytes) -> tuple[str, str]:
    """(MSA-1, the ACK as text lines) of a reply, decoded with its MSH-18."""
    try:
        text = decode(reply).text
    except CharsetError:
        text = reply.decode("utf-8", errors="replace")
    lines = text.strip("\r").split("\r")
    msa = next((line for line in lines if line.startswith("MSA")), "")
    code = msa[4:6] if len(msa) >= 6 else "?"
    return code, "\n".join(lines)


def send_command(args: argparse.Namespace, settings: Settings, _: Opener) -> int:
    failed = 0
    try:
        with mllp.Client(args.host, args.port, args.timeout) as client:
            for path in args.files:
                for message in messages_in(path.read_bytes()):
                    code, text = show(client.exchange(message))
                    print(f"# {path.name}: {code}\n{text}\n")
                    failed += code not in ("AA", "CA")
    except (OSError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


# --- replay -----------------------------------------------------------------------------------


def replay_command(args: argparse.Namespace, settings: Settings, open_services: Opener) -> int:
    services = open_services(settings)
    mapped = failed = 0
    try:
        inbox = services.store.inbox
        records = inbox.search(CHANNEL, status=args.status, since=args.since, until=args.until,
                               sender=args.sender, limit=1_000_000)  # fmt: skip
        for record in reversed(records):  # in arrival order
            outcome = process(services, record)
            if outcome is None:
                print(f"{record.seq}: database busy, left for later", file=sys.stderr)
                failed += 1
            elif outcome.status == "mapped":
                mapped += 1
                print(f"{record.seq} {record.kind} {record.message_id}: mapped "
                      f"({len(outcome.written)} new versions)")  # fmt: skip
            else:
                failed += 1
                print(f"{record.seq} {record.kind} {record.message_id}: error: {outcome.err}")
    finally:
        services.close()
    print(f"replayed {mapped + failed}: {mapped} mapped, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


# --- check ------------------------------------------------------------------------------------


def check_command(args: argparse.Namespace, settings: Settings, _: Opener) -> int:
    """Validate with hl7apy (STRICT: structure, cardinality, datatypes) on demand: slow (tens
    of messages a second), so never on the ACK path. Z-segments are set aside first (hl7apy
    would drop them silently) and reported as kept."""
    from .validate import validate

    bad = 0
    for path in args.files:
        for message in messages_in(path.read_bytes()):
            problems, kept = validate(message, settings.hl7_charset)
            name = f"{path.name}"
            for z in kept:
                print(f"{name}: {z} kept as sent (site-defined, not validated)")
            for problem in problems:
                print(f"{name}: {problem}")
            bad += bool(problems)
            if not problems:
                print(f"{name}: valid")
    return 1 if bad else 0


def beside_serve(services: Services, opener: Opener) -> None:
    try:
        check_settings(services.settings)
    except ValueError as exc:
        logging_to_stderr()
        log.error("the HL7 v2 listener cannot start: %s", exc)
        services.close()
        return
    run_listener(services, opener)

