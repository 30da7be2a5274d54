"""Running the gateway: one process, or a supervisor with `--workers N` processes.

One process (the default): one event loop (uvloop when installed) serves the traffic port,
the admin port and, for the embedded demo config, the demo upstream.

`--workers N` (N > 1): the parent validates the config, then starts N worker processes
(spawned, not forked, so that no event loop state is inherited) that each bind the traffic
port with `SO_REUSEPORT`, so the kernel spreads connections across them. The parent serves
the admin port for all of them: `/readyz` is true once every worker has reported that it
serves, `/metrics` adds up the workers' values (prometheus-client multiprocess mode), and
`/config` reports JWKS health from the parent's own authorizers. A worker that dies is
started again; one that fails before serving stops the whole gateway (exit 1).

`--workers N` with `--watch-config`: the parent alone follows the ConfigMap (one watch and
one read of the Secrets per pod, whatever N; the workers import no Kubernetes client). It
validates each new version once, as a lone process would (a version that fails is logged
once and changes nothing), then hands the validated config to every worker over its pipe,
as its document; each worker loads and compiles it, reusing what did not change since its
previous config, fetches its keys and swaps it in place, and tells the parent which
config it serves. A worker started again starts on the latest valid config. The admin
port's `/config/hash` (and `/config`) move to a new config once every worker serves it;
`/config` lists each worker's process ID and config hash.

Shutdown (SIGTERM or SIGINT): `/readyz` turns false at once; the listening sockets close,
so no new connection is accepted; every response from then on carries
`Connection: close`; in-flight requests get up to `drainSeconds` to finish; idle
keep-alive connections are closed once nothing is in flight; open WebSocket sessions get
a close frame 1001 (Going Away) at once and count as in flight until both sides closed;
then the process exits 0.
The parent forwards the signal to the workers and exits 0 when all of them did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from aiohttp import web

from wardgate.gateway.admin import AdminSource, build_admin_app
from wardgate.gateway.app import Gateway, GatewayHolder, GatewayRunner, build_app, server_options
from wardgate.gateway.config import ConfigError
from wardgate.gateway.embedded import build_demo_upstream
from wardgate.gateway.factory import ProcessContext
from wardgate.gateway.loading import LoadedConfig, SecretSource, ValidatedPaths, load_config
from wardgate.gateway.memory import collection_paused
from wardgate.gateway.metrics import GatewayMetrics
from wardgate.gateway.requestlog import RequestLog
from wardgate.gateway.sources import check_runtime
from wardgate.gateway.tls import TlsListener

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None

if TYPE_CHECKING:  # the Kubernetes client is imported where a watch is made (the CLI)
    from wardgate.gateway.kubesource import ConfigWatch, Snapshot

logger = logging.getLogger("wardgate.gateway")

# Once nothing is in flight, idle keep-alive connections get this long to close on their
# own (a client mid-way through sending a request would otherwise see a reset).
IDLE_GRACE_SECONDS: Final = 0.5
POLL_SECONDS: Final = 0.02
BACKLOG: Final = 1024
WORKER_RESTART_DELAY: Final = 1.0
REPORT_RETRY_SECONDS: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
DEFAULT_TLS_PORT: Final = 8443


def tls_port(loaded: LoadedConfig, options: ServeOptions) -> int | None:
    """The port of the TLS listener, or None for none."""
    if options.tls_port is not None:
        return options.tls_port
    return DEFAULT_TLS_PORT if loaded.config.tls is not None else None


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Where and how to serve."""

    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int | None = 9901
    """None: no admin server."""
    workers: int = 1
    access_log: str = "-"
    """`-` for stdout, `off`, or a file path (appended to)."""
    banner: Callable[[str], str] | None = field(default=None, compare=False)
    """Given the traffic URL, text printed once the gateway serves (the demo's commands)."""
    demo_socket: socket.socket | None = field(default=None, compare=False)
    """A listening socket to serve the demo upstream on."""
    reuse_port: bool = False
    listen_fd: int | None = None
    """An inherited listening socket to serve on instead of binding `host:port`: processes
    that share one socket share its accept queue, so a successor can take over before its
    predecessor closes and no queued connection is reset (SO_REUSEPORT gives each process
    its own queue, and closing one resets what waits in it)."""
    log_level: str = "info"
    """Of the diagnostic log on stderr (workers configure theirs with it)."""
    watch: ConfigWatch | None = field(default=None, compare=False)
    """Follow the config's ConfigMap and apply each new version in place."""
    tls_port: int | None = None
    """The TLS listener's port; None: `DEFAULT_TLS_PORT` when the config has `tls`, else no
    TLS listener."""


def configure_logging(level: str) -> None:
    """The diagnostic log on stderr at `level` (`debug`, `info`, `warning`, `error`); at
    debug, asyncio's and aiohttp's own loggers stay at info."""
    logging.basicConfig(level=level.upper(), format="%(message)s", stream=sys.stderr)
    if level == "debug":
        for name in ("asyncio", "aiohttp"):
            logging.getLogger(name).setLevel(logging.INFO)


def run(loaded: LoadedConfig, options: ServeOptions) -> int:
    """Serve until SIGTERM or SIGINT; the exit code."""
    if options.workers > 1:
        return run_loop(supervise(loaded, options))
    return run_loop(serve(loaded, options))


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    if uvloop is None:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    result: int = uvloop.run(main)
    return result


def open_access_log(target: str) -> BinaryIO | None:
    if target == "off":
        return None
    if target == "-":
        return sys.stdout.buffer
    # Stays open for the life of the process.
    return Path(target).open("ab")


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _start_demo_upstream(options: ServeOptions) -> web.AppRunner | None:
    if options.demo_socket is None:
        return None
    runner = web.AppRunner(build_demo_upstream(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, options.demo_socket).start()
    return runner


async def serve(
    loaded: LoadedConfig,
    options: ServeOptions,
    supervisor: multiprocessing.connection.Connection | None = None,
) -> int:
    """Serve the gateway in this process (alone, or as one of several workers, then with
    the pipe to the supervising parent: ready and serving reports out, configs in)."""
    stop = _stop_event()
    metrics = GatewayMetrics()
    request_log = RequestLog(open_access_log(options.access_log))
    demo = await _start_demo_upstream(options)
    app = build_app(loaded, metrics=metrics, request_log=request_log)
    runner = GatewayRunner(app, shutdown_timeout=1.0, **server_options(loaded))
    await runner.setup()
    admin_runner: web.AppRunner | None = None
    following: asyncio.Task[None] | None = None
    if options.watch is not None:
        following = asyncio.create_task(
            follow_config(runner.holder, options.watch), name="wardgate-follow-config"
        )
    elif supervisor is not None:
        following = asyncio.create_task(
            follow_supervisor(runner.holder, supervisor), name="wardgate-follow-supervisor"
        )
    try:
        site: web.BaseSite
        if options.listen_fd is not None:
            site = web.SockSite(runner, socket.socket(fileno=options.listen_fd))
        else:
            if options.reuse_port:
                warn_without_request_migration()
            site = web.TCPSite(
                runner, options.host, options.port, backlog=BACKLOG, reuse_port=options.reuse_port
            )
        await site.start()
        tls_site = await start_tls_site(runner, loaded, options)
        if options.admin_port is not None:
            source = AdminSource(
                loaded,
                ready=lambda: runner.gateway.ready and not runner.gateway.draining,
                metrics=metrics,
                holder=runner.holder,
            )
            admin_runner = web.AppRunner(build_admin_app(source), access_log=None)
            await admin_runner.setup()
            await web.TCPSite(admin_runner, options.admin_host, options.admin_port).start()
        host, port = runner.addresses[0][:2]
        note = ""
        if tls_site is not None:
            note = f" and https://{host}:{runner.addresses[1][1]}"
        _announce(host, port, admin_runner, options, note)
        if supervisor is not None:
            supervisor.send(READY)
        await stop.wait()
        logger.info("draining (up to %ss)", loaded.config.drain_seconds)
        sites = [site] if tls_site is None else [site, tls_site]
        await drain(runner, sites, runner.gateway.loaded.config.drain_seconds)
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        await runner.cleanup()
        request_log.flush()
        if admin_runner is not None:
            await admin_runner.cleanup()
        if demo is not None:
            await demo.cleanup()
    logger.info("stopped")
    return 0


async def start_tls_site(
    runner: GatewayRunner, loaded: LoadedConfig, options: ServeOptions
) -> web.BaseSite | None:
    """The TLS listener on the traffic server, serving the current config's certificates
    (a new config applies from the next handshake on)."""
    port = tls_port(loaded, options)
    if port is None:
        return None
    holder = runner.holder
    listener = TlsListener(lambda: holder.current.certificates)
    holder.on_swap.append(lambda _: listener.refresh())
    site = web.TCPSite(
        runner,
        options.host,
        port,
        ssl_context=listener.context,
        backlog=BACKLOG,
        reuse_port=options.reuse_port,
    )
    await site.start()
    if loaded.config.tls is None:
        logger.warning("TLS port %d: the config has no `tls`: handshakes fail until it has", port)
    return site


async def follow_config(holder: GatewayHolder, watch: ConfigWatch) -> None:
    """Apply each new snapshot of the watched ConfigMap in place, until cancelled.

    Validation and compilation run in a thread, so that a large config does not hold up
    requests for its whole build. The hash served is recorded (`watch.report`) at start and
    after each swap."""
    reporter = ServedReporter(watch)
    reporter.served(holder.config_hash)

    async def apply(snapshot: Snapshot) -> None:
        if snapshot.config_hash and snapshot.config_hash == holder.config_hash:
            return
        try:
            gateway = await asyncio.to_thread(
                build_snapshot, holder, watch.prepare, snapshot, watch.paths
            )
        except ConfigError as exc:
            holder.refused(snapshot.config_hash, exc.problems)
            return
        await holder.swap(gateway, gateway.loaded.config_hash)
        reporter.served(holder.config_hash)

    async with reporter:
        await follow_snapshots(watch, apply)


class ServedReporter:
    """Records the hash served where `watch.report` says (nowhere when None), in a task:
    the latest only when swaps come faster than the writes, a failed write retried with
    backoff."""

    def __init__(self, watch: ConfigWatch) -> None:
        self.watch = watch
        self._hash: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def served(self, config_hash: str) -> None:
        self._hash = config_hash
        self._changed.set()

    async def __aenter__(self) -> ServedReporter:
        if self.watch.report is not None:
            self._task = asyncio.create_task(self._run(), name="wardgate-report-served")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        from wardgate.gateway.kubesource import SourceError

        report = self.watch.report
        assert report is not None
        failures = 0
        reported: str | None = None
        while True:
            await self._changed.wait()
            self._changed.clear()
            served = self._hash
            if served is None or served == reported:
                continue
            try:
                await asyncio.to_thread(self.watch.source.report_served, report, served)
            except SourceError as exc:
                failures += 1
                delay = REPORT_RETRY_SECONDS[min(failures, len(REPORT_RETRY_SECONDS)) - 1]
                logger.warning("%s; again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                self._changed.set()
                continue
            failures = 0
            reported = served


async def follow_snapshots(
    watch: ConfigWatch, apply: Callable[[Snapshot], Awaitable[None]]
) -> None:
    """Call `apply` with each new snapshot of the watched ConfigMap, until cancelled.

    The watch runs in a thread (the `kubernetes` client blocks); snapshots that arrive while
    one is being applied are coalesced to the latest."""
    loop = asyncio.get_running_loop()
    latest: list[Snapshot] = []
    changed = asyncio.Event()

    def offer(snapshot: Snapshot) -> None:
        latest[:] = [snapshot]
        changed.set()

    stop = threading.Event()
    thread = threading.Thread(
        target=watch.source.follow,
        args=(lambda s: loop.call_soon_threadsafe(offer, s), stop, watch.since),
        name="wardgate-config-watch",
        daemon=True,
    )
    thread.start()
    try:
        while True:
            await changed.wait()
            changed.clear()
            await apply(latest.pop())
    finally:
        stop.set()
        watch.source.close()


READY: Final = "ready"
SERVING: Final = "serving"
"""A worker's report, with the hash of the config it serves from then on."""


async def follow_supervisor(
    holder: GatewayHolder, supervisor: multiprocessing.connection.Connection
) -> None:
    """Apply each config the supervising parent sends (validated there) in place, until
    cancelled, and report each one served.

    A config comes as its document (`SentConfig`), not as its validated models: a worker
    loads it with the entries it validated before (`ValidatedPaths`) and builds it from
    its serving config, so a one-Route change costs it that Route, as in a lone process
    (pickling 20,000 validated paths, and unpickling them in each worker, cost more than
    validating one Route). A thread receives (the event loop does not wait for a large
    config); configs that arrive while one is being compiled are coalesced to the
    latest."""
    paths = ValidatedPaths()
    loop = asyncio.get_running_loop()
    latest: list[bytes] = []
    changed = asyncio.Event()

    def offer(payload: bytes) -> None:
        latest[:] = [payload]
        changed.set()

    def receive() -> None:
        while True:
            try:
                payload = supervisor.recv_bytes()
            except (EOFError, OSError):  # the parent is gone, or this process stops
                # A worker outliving its parent would keep the traffic port (shared with
                # SO_REUSEPORT) and serve its last config beside a restarted parent's
                # workers, unsupervised: it drains and exits as on SIGTERM instead.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                loop.call_soon_threadsafe(offer, payload)
            except RuntimeError:  # the loop is closed: the worker is stopping
                return

    threading.Thread(target=receive, name="wardgate-supervisor-configs", daemon=True).start()
    while True:
        await changed.wait()
        changed.clear()
        payload = latest.pop()
        try:
            gateway = await asyncio.to_thread(_build_sent, holder, payload, paths)
        except ConfigError as exc:  # validated by the parent: only a bug gets here
            holder.refused("(from the supervisor)", exc.problems)
            continue
        if gateway is None:
            continue
        await holder.swap(gateway, gateway.loaded.config_hash)
        supervisor.send((SERVING, holder.config_hash))


@dataclass(frozen=True, slots=True)
class SentConfig:
    """A config the parent validated, as it sends it to its workers: the document (after
    `--server` overrides) and the secret values it uses."""

    document: object
    secrets: Mapping[str, str]
    origin: str
    config_hash: str

    def load(self, paths: ValidatedPaths) -> LoadedConfig:
        """The config loaded as the parent loaded it (raises `ConfigError`)."""
        return load_config(
            self.document,
            SecretSource(directory=None, environ=self.secrets),
            origin=self.origin,
            config_hash=self.config_hash,
            paths=paths,
        )


def _build_sent(holder: GatewayHolder, payload: bytes, paths: ValidatedPaths) -> Gateway | None:
    """The `Gateway` of a config sent by the parent; None when it is the one serving."""
    with collection_paused():
        sent: SentConfig = pickle.loads(payload)  # from this process's parent
        if sent.config_hash == holder.config_hash:
            return None
        return holder.build(sent.load(paths))


def validate_snapshot(
    prepare: Callable[[object], object],
    snapshot: Snapshot,
    paths: ValidatedPaths | None = None,
    previous: Gateway | None = None,
) -> tuple[LoadedConfig, SentConfig, Gateway]:
    """Validate a snapshot and build it once, without serving it (raises `ConfigError`):
    what the supervisor checks before handing a config to its workers, and what it sends
    them. `paths` and `previous`: the entries and the build of the config checked before,
    reused where unchanged."""
    with collection_paused():
        document = prepare(snapshot.document)
        loaded = load_config(
            document,
            SecretSource(directory=None, environ=snapshot.secrets),
            origin=snapshot.origin,
            config_hash=snapshot.config_hash or None,
            paths=paths,
        )
        checked = check_runtime(loaded, previous)
        sent = SentConfig(document, dict(snapshot.secrets), snapshot.origin, loaded.config_hash)
        return loaded, sent, checked


def build_snapshot(
    holder: GatewayHolder,
    prepare: Callable[[object], object],
    snapshot: Snapshot,
    paths: ValidatedPaths | None = None,
) -> Gateway:
    """Validate a snapshot (its document passed through `prepare`) and compile it for
    `holder` (raises `ConfigError`; swaps nothing). `paths`: the entries validated before
    (`ConfigWatch.paths`); the holder's serving config lends its routes and authorizers."""
    with collection_paused():
        loaded = load_config(
            prepare(snapshot.document),
            SecretSource(directory=None, environ=snapshot.secrets),
            origin=snapshot.origin,
            config_hash=snapshot.config_hash or None,
            paths=paths,
        )
        return holder.build(loaded)


MIGRATE_REQUESTS_SYSCTL = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def warn_without_request_migration() -> None:
    """Say so when a handover on a shared port may reset connections.

    With SO_REUSEPORT each process has its own accept queue; when the old process closes
    its socket, Linux resets the connections still queued there unless
    `net.ipv4.tcp_migrate_req` is 1 (Linux 5.14+), which moves them to the successor.
    """
    try:
        enabled = MIGRATE_REQUESTS_SYSCTL.read_text().strip() == "1"
    except OSError:
        return
    if not enabled:
        logger.warning(
            "--reuse-port: net.ipv4.tcp_migrate_req is 0, so connections queued on this "
            "process when it stops are reset; set it to 1, or hand the listening socket "
            "over with --listen-fd"
        )


async def drain(
    runner: GatewayRunner, site: web.BaseSite | Sequence[web.BaseSite], seconds: float
) -> None:
    """Stop accepting, then wait for in-flight requests and busy connections to finish."""
    gateway = runner.gateway
    gateway.draining = True
    for listening in [site] if isinstance(site, web.BaseSite) else site:
        await listening.stop()
    # Open WebSocket sessions get their close frame (1001) now, so that their close
    # handshakes end within the drain period.
    runner.going_away()
    holder = runner.holder
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    quiet_since: float | None = None
    while (now := loop.time()) < deadline:
        server = runner.server
        connections = len(server.connections) if server is not None else 0
        if holder.in_flight == 0:
            if connections == 0:
                break
            if quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= IDLE_GRACE_SECONDS:
                break
        else:
            quiet_since = None
        await asyncio.sleep(POLL_SECONDS)


def _announce(
    host: str, port: int, admin: web.BaseRunner | None, options: ServeOptions, note: str = ""
) -> None:
    """Say on stderr where the gateway listens, then the banner when there is one."""
    line = f"wardgate: listening on http://{host}:{port}{note}"
    if admin is not None:
        admin_host, admin_port = admin.addresses[0][:2]
        line += f" (admin http://{admin_host}:{admin_port})"
    print(line, file=sys.stderr, flush=True)
    if options.banner is not None:
        print(options.banner(_client_url(options.host, port)), file=sys.stderr, flush=True)


def _client_url(host: str, port: int) -> str:
    """A URL a local client can use for a listening address."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _worker_main(
    loaded: LoadedConfig, options: ServeOptions, supervisor: multiprocessing.connection.Connection
) -> None:
    """Entry point of a worker process."""
    configure_logging(options.log_level)
    # The parent forwards SIGINT as SIGTERM; a terminal's Ctrl-C reaches every process of
    # the group, and one drain is enough.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(run_loop(serve(loaded, options, supervisor)))


class _Worker:
    def __init__(self, index: int, process: multiprocessing.process.BaseProcess) -> None:
        self.index = index
        self.process = process
        self.ready = False
        self.conn: multiprocessing.connection.Connection | None = None
        self.config_hash = ""
        """Of the config it reported serving."""


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) the traffic port, so that port 0 becomes one port that every
    worker then binds with `SO_REUSEPORT`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def supervise(loaded: LoadedConfig, options: ServeOptions) -> int:
    """Run `options.workers` worker processes and the admin server; forward signals; with
    a watch, follow the config for all of them."""
    stop = _stop_event()
    loop = asyncio.get_running_loop()
    reserved = _reserve_port(options.host, options.port)
    port = reserved.getsockname()[1]
    secure_port = tls_port(loaded, options)
    reserved_tls = None
    if secure_port is not None:
        reserved_tls = _reserve_port(options.host, secure_port)
        secure_port = reserved_tls.getsockname()[1]
    worker_options = replace(
        options,
        port=port,
        admin_port=None,
        banner=None,
        demo_socket=None,
        reuse_port=True,
        watch=None,
        tls_port=secure_port,
    )
    context = multiprocessing.get_context("spawn")
    workers: dict[int, _Worker] = {}
    failed = asyncio.Event()
    all_ready = asyncio.Event()
    draining = False
    exit_codes: list[int] = []
    latest = [loaded]
    """The latest valid config: what a worker starts (again) on."""
    checked: list[Gateway | None] = [None]
    """The latest valid config's check (`validate_snapshot`), for the next to reuse."""
    tasks: set[asyncio.Task[None]] = set()
    reporter: ServedReporter | None = None

    clients = ProcessContext.create()
    source = AdminSource(
        loaded,
        ready=lambda: all_ready.is_set() and not draining,
        authorizers=clients.authorizers(loaded),
        extra=lambda: {
            "workers": len(workers),
            "workerProcesses": [
                {"index": w.index, "pid": w.process.pid, "configHash": w.config_hash}
                for w in sorted(workers.values(), key=lambda w: w.index)
            ],
        },
    )

    def start(index: int) -> None:
        # Duplex: the worker reports ready and the configs it serves; configs go to it.
        here, there = context.Pipe(duplex=True)
        process = context.Process(
            target=_worker_main,
            args=(latest[0], worker_options, there),
            name=f"wardgate-worker-{index}",
            daemon=False,
        )
        process.start()
        there.close()
        worker = _Worker(index, process)
        worker.conn = here
        worker.config_hash = latest[0].config_hash
        workers[index] = worker
        loop.add_reader(here.fileno(), on_message, worker)
        loop.add_reader(process.sentinel, on_exit, worker)

    def on_message(worker: _Worker) -> None:
        assert worker.conn is not None
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(worker.conn.fileno())
            return
        if isinstance(message, tuple) and message[:1] == (SERVING,):
            worker.config_hash = str(message[1])
        else:
            worker.ready = True
            if all(w.ready for w in workers.values()):
                if not all_ready.is_set() and reporter is not None:
                    reporter.served(source.loaded.config_hash)  # every worker serves it
                all_ready.set()
        settle()

    def settle() -> None:
        """Once every worker serves the latest config, the admin port reports it."""
        new = latest[0]
        if source.loaded is new or not all_ready.is_set():
            return
        if any(w.config_hash != new.config_hash for w in workers.values()):
            return
        source.loaded = new
        if reporter is not None:
            reporter.served(new.config_hash)
        task = loop.create_task(_swap_admin_authorizers(source, new, clients))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_exit(worker: _Worker) -> None:
        loop.remove_reader(worker.process.sentinel)
        if worker.conn is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
        worker.process.join()
        code = worker.process.exitcode or 0
        exit_codes.append(code)
        del workers[worker.index]
        if draining:
            if not workers:
                stop.set()
            return
        if not worker.ready:
            logger.error("worker %d exited with %s before serving", worker.index, code)
            failed.set()
            return
        logger.warning("worker %d exited with %s; starting it again", worker.index, code)
        all_ready.clear()
        loop.call_later(WORKER_RESTART_DELAY, start, worker.index)

    metrics = GatewayMetrics() if options.watch is not None else None

    async def hand_over(snapshot: Snapshot) -> None:
        """Validate a new snapshot once, then send it to every worker."""
        current = latest[0]
        if snapshot.config_hash and snapshot.config_hash == current.config_hash:
            return
        assert options.watch is not None
        try:
            new, sent, checked[0] = await asyncio.to_thread(
                validate_snapshot,
                options.watch.prepare,
                snapshot,
                options.watch.paths,
                checked[0],
            )
        except ConfigError as exc:
            if metrics is not None:
                metrics.reload(ok=False)
            logger.error(
                "config %s refused, config %s keeps serving (%d problem(s)):\n  %s",
                snapshot.config_hash,
                current.config_hash,
                len(exc.problems),
                "\n  ".join(exc.problems),
            )
            return
        latest[0] = new
        payload = await asyncio.to_thread(pickle.dumps, sent, pickle.HIGHEST_PROTOCOL)
        for worker in list(workers.values()):
            if worker.conn is not None and not worker.conn.closed:
                # A worker that exits meanwhile is started again on `latest`.
                with contextlib.suppress(OSError, ValueError):
                    await asyncio.to_thread(worker.conn.send_bytes, payload)
        logger.info(
            "config %s (%d paths) handed to %d workers",
            new.config_hash,
            len(new.config.paths),
            len(workers),
        )

    for index in range(options.workers):
        start(index)

    following: asyncio.Task[None] | None = None
    if options.watch is not None:
        following = asyncio.create_task(
            follow_snapshots(options.watch, hand_over), name="wardgate-follow-config"
        )
        reporter = ServedReporter(options.watch)
        await reporter.__aenter__()
    admin_runner: web.AppRunner | None = None
    demo = await _start_demo_upstream(options)
    try:
        if options.admin_port is not None:
            admin_runner = web.AppRunner(build_admin_app(source), access_log=None)
            await admin_runner.setup()
            await web.TCPSite(admin_runner, options.admin_host, options.admin_port).start()
        if source.authorizers is not None:
            await source.authorizers.prefetch()
        waiters = [asyncio.ensure_future(e.wait()) for e in (all_ready, failed, stop)]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        reserved.close()
        if reserved_tls is not None:
            reserved_tls.close()
        if failed.is_set():
            stop.set()
        else:
            if all_ready.is_set() and not stop.is_set():
                note = f" ({options.workers} workers)"
                _announce(options.host, port, admin_runner, options, note)
            stop_or_fail = [asyncio.ensure_future(e.wait()) for e in (failed, stop)]
            await asyncio.wait(stop_or_fail, return_when=asyncio.FIRST_COMPLETED)
            for waiter in stop_or_fail:
                waiter.cancel()
        draining = True
        stop.clear()
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        for worker in list(workers.values()):
            if worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
        if workers:
            grace = latest[0].config.drain_seconds + 10.0
            try:
                await asyncio.wait_for(stop.wait(), grace)
            except TimeoutError:
                for worker in list(workers.values()):
                    worker.process.kill()
                exit_codes.append(1)
    finally:
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        if reporter is not None:
            await reporter.__aexit__()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if admin_runner is not None:
            await admin_runner.cleanup()
        if demo is not None:
            await demo.cleanup()
        if source.authorizers is not None:
            await source.authorizers.close()
        await clients.close()
    if failed.is_set() or any(exit_codes):
        return 1
    return 0


async def _swap_admin_authorizers(
    source: AdminSource, loaded: LoadedConfig, context: ProcessContext
) -> None:
    """The admin port's authorizers (JWKS health in `/config`) for a new config."""
    new = context.authorizers(loaded)
    try:
        await new.prefetch()
    except asyncio.CancelledError:
        await new.close()
        raise
    old, source.authorizers = source.authorizers, new
    if old is not None:
        await old.close()
