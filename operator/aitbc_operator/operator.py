"""Start kopf with the operator's settings and handlers (`aitbc-operator run`)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import ctypes
import http.server
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import kopf

from . import metrics
from . import settings as settings_mod
from .builders.common import LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY
from .builders.node_config import COMPONENT_NODE
from .k8s import auth, resources
from .k8s.client import Kube
from .k8s.lease import Election, LeaderLock
from .persistence import ObservedGenerationDiffBase, UnmarkedProgressStorage
from .postgres import ServerPool
from .reconcilers.claims import ClaimBook
from .reconcilers.shared_reads import SecretReads

log = logging.getLogger(__name__)

FINALIZER = "aitbc.io/finalizer"

#: Server-side label selectors of the built-in kinds the handlers watch. kopf lists and watches a kind cluster-wide (or
#: in each watched namespace) for any handler on it and filters by the handlers' labels only afterwards, in memory;
#: with these, only the operator's own children reach it, so unrelated Secrets and Pods (Helm releases, other
#: workloads) cost no memory and no events. Each handler's own label filter implies its kind's selector (checked by
#: tests/unit/test_operator_settings.py); admin and CA Secrets are read by name, never watched.
WATCH_SELECTORS: dict[tuple[str, str] | tuple[str, str, str], dict[str, str]] = {
    ("v1", "secrets"): {LABEL_MANAGED_BY: MANAGED_BY},
    ("v1", "pods"): {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: COMPONENT_NODE},
    ("apps", "v1", "statefulsets"): {LABEL_MANAGED_BY: MANAGED_BY},
    ("apps", "v1", "deployments"): {LABEL_MANAGED_BY: MANAGED_BY},
    ("batch", "v1", "jobs"): {LABEL_MANAGED_BY: MANAGED_BY},
}


def label_selector(labels: dict[str, str]) -> str:
    """The labels as a Kubernetes equality-based label selector (``k=v,k2=v2``)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def configure(settings: kopf.OperatorSettings, cfg: settings_mod.Settings) -> None:
    """All kopf settings, in one place."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = UnmarkedProgressStorage()
    settings.persistence.diffbase_storage = ObservedGenerationDiffBase([resources.AITBC_DATABASE.kind])
    # Streams are re-established by the server at least this often, and a silent stream is noticed by the client.
    settings.watching.server_timeout = int(cfg.watch_server_timeout)
    settings.watching.client_timeout = int(cfg.watch_client_timeout)
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    for kind, labels in WATCH_SELECTORS.items():
        settings.watching.label_selectors[kind] = label_selector(labels)
    # kopf counts an object's worker against the limit until it has idled for idle_timeout after its last event
    # (kopf's default: 5 s), and keeps the events of objects waiting for a slot. With the default, 20 workers cap the
    # operator at ~4 objects per second whatever the handlers cost (measured: 200 new AitbcDatabases took 50 s, 4x the
    # time their SQL needs); with 0.5 s at ~36 per second (a restart with 2,000 AitbcDatabases: 55 s, the events
    # waiting meanwhile held ~50 MiB of parsed bodies). A short linger frees the slot for the next object.
    settings.queueing.worker_limit = cfg.max_workers
    settings.queueing.idle_timeout = cfg.worker_idle_timeout
    settings.execution.max_workers = cfg.max_workers
    # The operator's own Events (handlers/common.py: event) are always posted; of kopf's log lines only warnings and
    # errors become Events ("Handler ... succeeded" on every object would double the API writes of a reconcile).
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    # HA is a Lease taken before kopf starts (see run()); kopf's own peering is not used.
    settings.peering.standalone = True


#: Seconds kopf's idle connections to the API stay open (aiohttp's default: 15). kopf opens as many at once as its
#: workers write (a burst of creations: ~50) and aiohttp reuses pooled connections in turn, so any trickle of requests
#: kept all of them - each with a 128 KiB TLS buffer - open; measured with 200 AitbcDatabases: 34 connections and
#: 4.3 MiB of TLS buffers left idle.
KOPF_KEEPALIVE = 2.0


@kopf.on.login()
async def _login(**_: Any) -> kopf.AiohttpSession:
    """kopf's own credentials (its watches, patches, Events): the same as the operator's client, from k8s/auth.py;
    kopf calls it again after a 401 (and closes the session it replaces). Registered, so kopf never falls back to the
    official client's login. The session is kopf's own one but for the keep-alive (KOPF_KEEPALIVE)."""
    info = auth.login()
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KOPF_KEEPALIVE, ssl=info.as_ssl_context())
    session = aiohttp.ClientSession(connector=connector, headers=info.as_http_headers())
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, default_namespace=info.default_namespace)


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg = settings_mod.load()
    configure(settings, cfg)
    memo["settings"] = cfg
    # AitbcDatabase reconciles take the body kopf delivered when it holds the operator's own last write (Kube.current).
    memo["kube"] = kube = Kube.connect(connections=cfg.kube_connections, track=(resources.AITBC_DATABASE,))
    memo["claims"] = ClaimBook(kube, follow=True)
    memo["secret_reads"] = SecretReads(kube)
    memo["pg"] = ServerPool()
    from . import handlers  # here, not at the top: importing handlers registers them (run() does)

    handlers.share_registries(memo)


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    claims = memo.get("claims")
    if claims is not None:
        await claims.stop()
    pool = memo.get("pg")
    if pool is not None:
        await pool.aclose()
    kube = memo.get("kube")
    if kube is not None:
        await kube.aclose()


@kopf.on.probe(id="kube")
def _probe_kube(memo: kopf.Memo, **_: Any) -> str:
    kube: Kube | None = memo.get("kube")
    return "ok" if kube is not None else "starting"


class _StandbyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path.split("?")[0] == "/healthz"
        body = b'{"standby": "waiting for the leader lease"}' if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes are not worth a log line."""


@contextlib.contextmanager
def standby_health_endpoint(port: int) -> Iterator[None]:
    """Serve `/healthz` (200) while this replica waits to lead; released before kopf binds the same port."""
    if not port:
        yield
        return
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), _StandbyHandler)  # noqa: S104 (probes come from the kubelet)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


#: After losing the lease, kopf gets this long to stop before the process exits anyway. Its handlers can no longer
#: start SQL or API calls (stop_acting); this bounds kopf's own last writes well within the lease duration minus the
#: renew deadline, after which another replica may lead.
LOST_EXIT_GRACE = 2.0


def stop_acting(memo: kopf.Memo, why: str) -> None:
    """Leadership lost (called from the election's thread): from now on no SQL job, no SQL statement and no API request
    of the handlers starts."""
    pool: ServerPool | None = memo.get("pg")
    if pool is not None:
        pool.shutdown()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        kube.fence(f"leadership lost ({why})")


def _exit_now(why: str) -> None:
    """Exit with status 2 at once: not waiting for kopf or a request (one may hang on a stalled apiserver)."""
    log.error("stopped leading: %s; exiting so that this replica restarts as a candidate", why)
    logging.shutdown()
    os._exit(2)


async def _operate(cfg: settings_mod.Settings, watched: tuple[str, ...], memo: kopf.Memo,
                   lock: Election | None, lost: threading.Event) -> None:
    """kopf until a signal, or (with a lock) until leadership is lost: then stop acting at once, kopf right after."""
    # An asyncio.Event of kopf's own loop: kopf waits for thread-level flags in an executor thread, which would
    # keep the process alive after a SIGTERM.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if lock is not None:

        def on_lost(why: str) -> None:
            stop_acting(memo, why)
            lost.set()
            log.error("leadership lost (%s): SQL and API calls stopped, kopf stopping", why)
            loop.call_soon_threadsafe(stop.set)
            late = f"kopf still stopping after {LOST_EXIT_GRACE:g} s"
            watchdog = threading.Timer(LOST_EXIT_GRACE, _exit_now, (late,))
            watchdog.daemon = True
            watchdog.start()

        lock.keep(on_lost)
    await kopf.operator(
        standalone=True,
        clusterwide=not watched,
        namespaces=watched,
        # Given, not detected: kopf's default asks getpass.getuser(), which raises in a container whose uid has
        # no /etc/passwd entry (65532 in our image; any uid under OpenShift) - the pod crash-looped at start.
        identity=cfg.identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str, not exported
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
        stop_flag=stop,
        memo=memo,
    )


#: glibc's mallopt parameters (malloc.h) and the values the operator runs with.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_TUNING = ((_M_ARENA_MAX, 2), (_M_MMAP_THRESHOLD, 128 * 1024), (_M_TRIM_THRESHOLD, 128 * 1024))


def tune_malloc() -> bool:
    """glibc's malloc set for a long-running process whose work comes in bursts (docs/benchmarks.md: less resident
    memory after 200 AitbcDatabases were created): two arenas instead of eight per core for its few threads, and a
    fixed mmap threshold - glibc raises it after the first large free, so that the 128 KiB TLS buffer of every API
    connection opened in a burst then stays in a heap that no longer shrinks. Before any thread starts; False where
    the C library is not glibc (nothing changed)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in MALLOC_TUNING)


#: Bytes asyncio reads from a TLS connection at once, the size of the buffer each connection allocates and zeroes.
TLS_READ_BUFFER = 64 * 1024


def tune_tls_buffers() -> bool:
    """asyncio's TLS connections read into a buffer of ``SSLProtocol.max_size`` bytes each (256 KiB by default,
    resident from the start: it is zeroed), for each of the ~10 API connections an idle operator holds (kopf's watches
    and its own); 64 KiB still takes four full TLS records per read. No setting exists for it, hence the class
    attribute. False where asyncio has no such attribute (another Python: nothing changed)."""
    protocol = getattr(asyncio.sslproto, "SSLProtocol", None)
    if not isinstance(getattr(protocol, "max_size", None), int):
        return False
    protocol.max_size = TLS_READ_BUFFER  # type: ignore[union-attr]
    return True


def run(*, namespaces: tuple[str, ...] = (), standalone: bool = False, verbose: bool = False) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM; returns the exit code) or loses leadership (then the
    process exits with status 2 within LOST_EXIT_GRACE seconds)."""
    tune_malloc()
    tune_tls_buffers()
    from . import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if not verbose:  # a line per kubelet probe of /healthz (every 10 s, twice) drowns what the operator did
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    cfg = settings_mod.load()
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    lock: Election | None = None
    if cfg.leader_election and not standalone:
        # Its own client (one connection) on its own thread and loop, never queued behind the handlers' calls nor
        # kopf's loop; a request is never retried within its timeout: the election retries on its own clock.
        # The holder is this process, not just this pod: a restarted container is a new candidate that waits.
        identity = f"{cfg.identity}_{secrets.token_hex(4)}"
        lock = Election(LeaderLock(Kube.connect(connections=1), cfg.leader_election_namespace,
                                   cfg.leader_election_name, identity, timings=cfg.lease))
        log.info("waiting for the leader lease %s/%s", cfg.leader_election_namespace, cfg.leader_election_name)
        # A standby replica is alive: answer the probes until kopf (and its own endpoint) takes over the port.
        with standby_health_endpoint(cfg.health_port):
            if not lock.acquire():
                return 1
    lost = threading.Event()
    try:
        asyncio.run(_operate(cfg, namespaces or cfg.namespaces, kopf.Memo(), lock, lost))
    finally:
        if lock is not None and not lost.is_set():
            lock.release()
    if lost.is_set():
        _exit_now("kopf stopped")
    if lock is not None:
        log.info("stopped leading: lease released")
    return 0
