"""The mapper in a process of its own (`hl7 listen`, `serve --hl7`): the listener's event loop
then never waits for the mapper's Python work (one interpreter lock per process), so ACKs keep
their pace while messages are mapped. The child runs the same Mapper (worker.py) on Services
it opens itself; the two processes share the wake, urgent and stop events, and the child sends
back the outcomes an ACK waits for over a pipe. The messages are planned (decoded, parsed,
mapped, validated: worker.planned_after) in a third process, which the mapper asks over a pipe
of their own: planning and writing each have an interpreter, so they run on two cores at once.
The database is the only state they share: a message is mapped by whichever process runs,
after any restart."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from fhir_server.plugins import Opener
from fhir_server.services import Services
from fhir_server.settings import Settings

from .worker import Mapper, Outcome, Planner, planned_after

log = logging.getLogger("integrations.hl7v2")
_SPAWN = multiprocessing.get_context("spawn")
#: allocations between two collections of the youngest generation in the children (_open)
GC_YOUNG = 50_000


class MapperProcess:
    """Mapper's interface (start, wake, urgent, stop) over a spawned child process."""

    def __init__(self, settings: Settings, opener: Opener,
                 on_outcome: Callable[[Outcome], None] | None = None) -> None:  # fmt: skip
        self.on_outcome = on_outcome
        self.urgent = _SPAWN.Event()
        self._wake = _SPAWN.Event()
        self._stop = _SPAWN.Event()
        #: set once the child has opened its Services and maps
        self.ready = threading.Event()
        self._conn, child_conn = _SPAWN.Pipe()
        asks, answers = _SPAWN.Pipe()
        self._process = _SPAWN.Process(
            target=_child, name="hl7v2-mapper", daemon=True,
            args=(settings, opener, child_conn, asks, self._wake, self.urgent, self._stop),
        )  # fmt: skip
        self._planner = _SPAWN.Process(target=_planner, name="hl7v2-planner", daemon=True,
                                       args=(settings, opener, answers))  # fmt: skip
        #: the children hold these ends: EOF at the other end once a child is gone
        self._child_ends = (child_conn, asks, answers)
        self._reader = threading.Thread(target=self._read, name="hl7v2-outcomes", daemon=True)

    def start(self) -> None:
        self._planner.start()
        self._process.start()
        for end in self._child_ends:
            end.close()
        self._reader.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._process.join(timeout)
        if self._process.is_alive():  # stuck: its transaction rolls back, the inbox keeps all
            self._process.terminate()
            self._process.join(5)
        self._planner.join(5)  # it ends when the mapper's end of their pipe closes
        if self._planner.is_alive():
            self._planner.terminate()
        self._reader.join(5)

    def _read(self) -> None:
        """Outcomes from the child, until it exits."""
        while True:
            try:
                item: Any = self._conn.recv()
            except (EOFError, OSError):
                break
            if item == "ready":
                log.info("HL7 v2 mapper ready (process %s)", self._process.pid)
                self.ready.set()
            elif self.on_outcome is not None:
                self.on_outcome(item)
        if not self._stop.is_set():
            log.error("hl7v2: the mapper process ended (exit code %s); messages stay in the "
                      "inbox until the listener restarts", self._process.exitcode)  # fmt: skip


def _child(settings: Settings, opener: Opener, conn: Connection, asks: Connection, wake: Any,
           urgent: Any, stop: Any) -> None:  # fmt: skip
    """The child's body: map until `stop` is set or the parent is gone."""
    services = _open(settings, opener)
    lock = threading.Lock()  # the mapper thread and this one both write to the pipe

    def send(item: object) -> None:
        with lock:
            conn.send(item)

    def outcome(result: Outcome) -> None:
        if result.awaited:  # only what an ACK waits for crosses the pipe
            send(result)

    mapper = Mapper(services, outcome, wake=wake, urgent=urgent, plan=_asking(asks, services))
    mapper.start()
    send("ready")
    parent = multiprocessing.parent_process()
    try:
        while not stop.wait(0.5):
            if parent is not None and not parent.is_alive():
                break  # killed without a word: the inbox keeps what was not mapped
    finally:
        mapper.stop()
        services.close()
        conn.close()
        asks.close()


def _open(settings: Settings, opener: Opener) -> Services:
    """A child's Services. Their objects (the definitions, the validator's structures: some
    200,000) live as long as the process, so they are frozen out of the cyclic collector's
    reach: otherwise each full collection walks them all again, and the plans crossing the pipe
    (thousands of objects a message) set off many; unpickling a message cost 1 ms then, 0.2 ms
    frozen. A message's plan is ~1,500 new objects, few of them in cycles: the youngest
    generation is collected every GC_YOUNG allocations, not 700 (collections were 8% of the
    planning process's time)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent stops us
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")  # fmt: skip
    services = opener(settings)
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    return services


def _asking(asks: Connection, services: Services) -> Planner:
    """Plans from the planning process; made here if it is gone (no message waits for it)."""
    here = partial(planned_after, services)
    gone = False

    def plan(after: int) -> list[Any]:
        nonlocal gone
        if not gone:
            try:
                asks.send(after)
                answer: list[Any] = asks.recv()
                return answer
            except (EOFError, OSError):
                log.error("hl7v2: the planning process ended; planning in the mapper's")
                gone = True
        return here(after)

    return plan


def _planner(settings: Settings, opener: Opener, answers: Connection) -> None:
    """The planning process's body: a plan for each seq the mapper sends, until its end of
    the pipe closes (the mapper stopped, or is gone with the parent)."""
    services = _open(settings, opener)
    try:
        while True:
            try:
                after = answers.recv()
                answers.send(planned_after(services, after))
            except (EOFError, OSError):  # the mapper is gone
                break
    finally:
        services.close()
        answers.close()
