"""`keyhold serve --workers N`: N server processes sharing one listening port.

The supervisor prepares the database once (migrations, the first signing key), then
forks the workers before any gRPC object exists in it: gRPC core must not be running in
a process that forks. Each worker runs its own event loop, gRPC server (bound with
SO_REUSEPORT, so the kernel spreads new connections across them) and database pool, sized
to share the configured total. SIGTERM or SIGINT to the supervisor drains every worker;
a worker that dies on its own is restarted.

Several workers need PostgreSQL: revocations and key rotations reach the other
processes by NOTIFY, and the audit chain's appends are serialised by an advisory lock.
The embedded SQLite database has neither, so it is served by one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time

import structlog

from keyhold.log_output import flush_lines, share_output
from keyhold.settings import Settings

log = structlog.get_logger(__name__)
RESTART_DELAY_SECONDS = 1.0
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


class WorkerConfigError(ValueError):
    """The settings cannot be served by several processes."""


def worker_settings(settings: Settings, workers: int) -> Settings:
    """One worker's settings: its share of the database pool, the port shared."""
    if workers > 1 and settings.is_sqlite:
        raise WorkerConfigError(
            "several workers need PostgreSQL (KEYHOLD_DATABASE_URL): revocations and the "
            "audit chain are coordinated through it; SQLite is served by one process"
        )
    if workers > 1 and settings.listen_address.rsplit(":", 1)[-1] == "0":
        raise WorkerConfigError("several workers need a fixed port to share, not port 0")
    return settings.model_copy(
        update={
            "workers": workers,
            "database_pool_size": max(1, settings.database_pool_size // workers),
            "migrate_on_start": False,
        }
    )


async def prepare_database(settings: Settings) -> None:
    """What must happen once, before the workers start: migrations and the first key."""
    from keyhold.adapters.crypto.sealer import AeadSealer
    from keyhold.adapters.persistence.database import Database
    from keyhold.adapters.persistence.migrate import migrate
    from keyhold.adapters.persistence.unit_of_work import SqlUnitOfWorkFactory
    from keyhold.domain.clock import SystemClock
    from keyhold.wiring.platform import database_engine, encryption_keys, signing_keys_for

    database = Database(database_engine(settings))
    try:
        if settings.should_migrate_on_start:
            await migrate(database.engine)
        sealer = AeadSealer(encryption_keys(settings))
        keys = signing_keys_for(settings, SqlUnitOfWorkFactory(database, sealer), SystemClock())
        await keys.ensure_signer()
    finally:
        await database.dispose()


def _die_with_supervisor(supervisor: int) -> None:
    """Ask Linux to SIGTERM this worker when its supervisor dies, even by SIGKILL."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request took effect
        os._exit(0)


def _run_worker(settings: Settings, index: int, supervisor: int) -> None:
    """The child's whole life; never returns."""
    from keyhold.event_loop import run as run_on_loop
    from keyhold.server import serve

    code = 0
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server handles it
        _die_with_supervisor(supervisor)
        structlog.contextvars.bind_contextvars(worker=index)
        share_output()
        run_on_loop(serve(settings), settings.event_loop)
    except BaseException:  # the child must never unwind into the supervisor's code
        log.exception("worker_failed", worker=index)
        code = 1
    finally:
        flush_lines()  # os._exit runs no atexit hook
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def metrics_address_of(settings: Settings, index: int) -> str | None:
    """Worker `index` serves its metrics on the configured port + index (each process
    has its own counters; scrape every port, or sum them in the query)."""
    if not settings.metrics_address:
        return None
    host, port = settings.metrics_address.rsplit(":", 1)
    return settings.metrics_address if port == "0" else f"{host}:{int(port) + index}"


def _spawn(settings: Settings, index: int) -> int:
    supervisor = os.getpid()
    own = settings.model_copy(update={"metrics_address": metrics_address_of(settings, index)})
    pid = os.fork()
    if pid == 0:
        _run_worker(own, index, supervisor)
    log.info("worker_started", worker=index, pid=pid)
    return pid


def supervise(settings: Settings, workers: int) -> int:
    """Fork `workers` servers and wait; returns the exit code for the command."""
    from keyhold.wiring.transport import check_transport

    shared = worker_settings(settings, workers)
    check_transport(settings)
    asyncio.run(prepare_database(settings))
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def reload(signum: int, _frame: object) -> None:
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)  # each worker rereads its TLS files

    running: dict[int, int] = {}  # pid -> worker index
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    signal.signal(signal.SIGHUP, reload)
    for index in range(workers):
        running[_spawn(shared, index)] = index
    failed = False
    while running:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in running:
            continue
        index = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:  # a worker still starting up dies of the signal itself: also clean
            failed |= code not in (0, -signal.SIGTERM, -signal.SIGINT)
            continue
        log.error("worker_exited", worker=index, pid=pid, exit_code=code)
        time.sleep(RESTART_DELAY_SECONDS)
        if not stopping:
            running[_spawn(shared, index)] = index
    return 1 if failed else 0
