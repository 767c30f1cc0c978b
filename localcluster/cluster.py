"""A local Kubernetes control plane for the tests and the demo, without Docker.

Five processes on 127.0.0.1, each on a free port and in its own process group:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which simulates the kubelet of a few fake
nodes, so that pods are scheduled, become Running/Ready, Deployments and StatefulSets roll out, and the garbage
collector deletes children). The binaries come from `localcluster/build-binaries.sh` (`make cluster-bins`), cached in
`${XDG_CACHE_HOME:-~/.cache}/aitbc-operator/k8s-<version>/bin`.

Security is real but small: a private CA made with `openssl`, a serving certificate for the apiserver, a
ServiceAccount signing key (so ServiceAccount tokens work, for RBAC tests), `--authorization-mode=Node,RBAC`, and a
static token file with one identity per component (the admin is in `system:masters`).

    with LocalCluster(Path("/tmp/k8s")) as cluster:        # start() ... stop()
        cluster.kubectl("get", "nodes")
        print(cluster.kubeconfig, cluster.logs_dir)

`python -m localcluster.cluster [WORKDIR]` starts one in the foreground (Ctrl-C stops it) and prints the line to
export for `AITBC_TEST_KUBECONFIG`, so that repeated test runs reuse it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_K8S_VERSION = "v1.34.4"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
NODE_NAMES = ("worker-1", "worker-2")
#: The real node's name (localcluster/node.py): kind-config.yaml's worker has the same one, so samples fit both.
REAL_NODE_NAME = "aitbc-worker"
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
KWOK_STAGES = "kwok-stages.yaml"
# Clients first, then the apiserver, then etcd: an apiserver whose etcd is gone does not finish its shutdown.
STOP_STAGES = (("kwok", "kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))


def crd_files() -> list[Path]:
    """The generated CRD manifests of the repository (crds/*.yaml without the kustomization)."""
    manifests = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    return [p for p in manifests if yaml.safe_load(p.read_text()).get("kind") == "CustomResourceDefinition"]


def k8s_version() -> str:
    """The pinned Kubernetes version (the Makefile exports AITBC_K8S_VERSION)."""
    return os.environ.get("AITBC_K8S_VERSION", DEFAULT_K8S_VERSION)


def default_bin_dir() -> Path:
    """Where build-binaries.sh puts the binaries (the Makefile exports AITBC_K8S_BIN)."""
    if explicit := os.environ.get("AITBC_K8S_BIN"):
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "aitbc-operator" / f"k8s-{k8s_version()}" / "bin"


class ClusterError(RuntimeError):
    """The local control plane could not be started or used."""


class ComponentNotReady(ClusterError):
    """One component did not come up; the message names it and ends with the tail of its log."""

    def __init__(self, component: str, problem: str, log: Path | None) -> None:
        self.component = component
        tail = tail_of(log, 40) if log else ""
        where = f" (log: {log})" if log else ""
        super().__init__(f"{component} did not come up: {problem}{where}\n--- last lines of its log ---\n{tail}")


def tail_of(path: Path, lines: int) -> str:
    """The last `lines` lines of a text file ("" when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- processes --------------------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGKILL the child when the process that started it dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def terminate_groups(groups: Mapping[str, int], timeout: float = 15.0) -> None:
    """SIGTERM each process group (leader pid = group id), wait up to `timeout`, then SIGKILL what is left.

    Works for groups started by another process too (the demo's `down`), so it polls instead of waiting on children.
    """
    for pgid in groups.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pending = dict(groups)
    while pending and time.monotonic() < deadline:
        for name, pgid in list(pending.items()):
            if not process_alive(pgid):  # a zombie counts as dead: its parent (Popen.wait, or init) reaps it
                del pending[name]
        if pending:
            time.sleep(0.1)
    for pgid in pending.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def stop_components(groups: Mapping[str, int], timeout: float = 15.0) -> None:
    """Stop control-plane process groups in STOP_STAGES order (names not in a stage, e.g. an operator, first)."""
    staged = {name for stage in STOP_STAGES for name in stage}
    terminate_groups({n: g for n, g in groups.items() if n not in staged}, timeout)
    for stage in STOP_STAGES:
        terminate_groups({n: groups[n] for n in stage if n in groups}, timeout)


@dataclass
class Component:
    """One process of the control plane."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *, detach: bool, env: Mapping[str, str] | None = None) -> None:
        """Start in a new session (own process group); unless detached, it dies with this process."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=None if detach else _die_with_parent,
                env=dict(env) if env is not None else None,
            )

    def exit_code(self) -> int | None:
        """The exit code when it has stopped, else None."""
        return self.proc.poll() if self.proc else None


# --- PKI and kubeconfigs ----------------------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _signed_cert(pki: Path, name: str, subject: str, sans: str | None = None) -> None:
    """`<name>.key` + `<name>.crt` signed by the CA (with subjectAltNames for a server)."""
    extra = ("-addext", f"subjectAltName={sans}") if sans else ()
    _openssl("req", *_EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, *extra, cwd=pki)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "3650", "-copy_extensions", "copy", "-out", f"{name}.crt", cwd=pki)


def make_pki(pki: Path, host: str = "127.0.0.1") -> None:
    """A CA, an apiserver serving certificate (host, 127.0.0.1, kubernetes.default, the Service IP), a client
    certificate for the apiserver's calls to kubelets (logs, exec), and a ServiceAccount signing key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *_EC_KEY, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=aitbc-local-ca", cwd=pki)
    ips = dict.fromkeys(("127.0.0.1", host, "10.96.0.1"))
    sans = ",".join([*(f"IP:{ip}" for ip in ips), "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
                     "DNS:kubernetes.default.svc"])
    _signed_cert(pki, "apiserver", "/CN=kube-apiserver", sans)
    _signed_cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


@dataclass(frozen=True)
class Identity:
    """A static-token identity."""

    user: str
    groups: tuple[str, ...]
    token: str = field(default_factory=lambda: secrets.token_hex(24))


def kubeconfig_dict(server: str, ca_file: Path, user: str, token: str) -> dict[str, Any]:
    """A kubeconfig with one cluster, one token user and one current context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "aitbc-local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "aitbc-local", "context": {"cluster": "aitbc-local", "user": user}}],
        "current-context": "aitbc-local",
    }


#: Audit policy of ``LocalCluster(audit=True)``: metadata (who, verb, resource, name, response code; no bodies) of every
#: request made with a ServiceAccount token, except the controllers' own (kube-system), which are most of the traffic.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def default_storage_class() -> dict[str, Any]:
    """The default StorageClass `standard`, served by the controller-manager's test-only hostPath provisioner.

    PVCs (e.g. an AitbcNode's chain volume, volumeClaimTemplates) get a PersistentVolume under /tmp/hostpath_pv/
    (which kwok's pods never touch); it is deleted with the claim.
    """
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def fake_node(name: str) -> dict[str, Any]:
    """A Node object that kwok manages (selected by annotation) like a real, Ready, 32-CPU node."""
    key, value = KWOK_NODE_ANNOTATION
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "type": "kwok", "node-role.kubernetes.io/worker": "",
            },
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }


# --- clusters ---------------------------------------------------------------------------------------------------------

class Cluster:
    """A cluster reachable through a kubeconfig (one we started, or one named by AITBC_TEST_KUBECONFIG)."""

    def __init__(self, kubeconfig: Path, bin_dir: Path | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.bin_dir = bin_dir or default_bin_dir()
        self.logs_dir: Path | None = None

    @property
    def kubectl_bin(self) -> str:
        """The pinned kubectl when built, else the one on PATH."""
        pinned = self.bin_dir / "kubectl"
        return str(pinned) if pinned.exists() else "kubectl"

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with check, a failure raises ClusterError carrying stderr."""
        argv = [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def apply_crds(self, files: Iterable[Path], timeout: float = 60.0) -> list[str]:
        """Server-side apply CRD files (one CRD each) and wait until every one is Established; their names.

        ``kubectl wait --for=condition=Established`` fails at once, instead of waiting, when it reads a CRD the
        apiserver has not written any condition to yet (".status.conditions accessor error: <nil>"): retried.
        """
        paths = list(files)
        self.kubectl("apply", "--server-side", "--force-conflicts", *(f"--filename={p}" for p in paths))
        names = [str(yaml.safe_load(p.read_text())["metadata"]["name"]) for p in paths]
        deadline = time.monotonic() + timeout
        while True:
            left = max(deadline - time.monotonic(), 1.0)
            result = self.kubectl("wait", "--for=condition=Established", f"--timeout={left:.0f}s",
                                  *(f"crd/{n}" for n in names), check=False, timeout=left + 30)
            if result.returncode == 0:
                return names
            if "accessor error" not in result.stderr or time.monotonic() > deadline:
                raise ClusterError(f"CRDs {', '.join(names)} not Established: {result.stderr.strip()}")
            time.sleep(0.2)

    def log_tails(self, lines: int = 30) -> str:
        """The tails of the component logs (empty for a reused cluster we did not start)."""
        if self.logs_dir is None or not self.logs_dir.is_dir():
            return ""
        parts = [f"--- {log} ---\n{tail_of(log, lines)}" for log in sorted(self.logs_dir.glob("*.log"))]
        return "\n".join(parts)


_RUNNING: list[LocalCluster] = []
_HANDLERS_INSTALLED = False


def _stop_all_running() -> None:
    for cluster in list(_RUNNING):
        cluster.stop()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    _stop_all_running()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_cleanup_handlers() -> None:
    """Stop every running cluster at exit and on SIGTERM/SIGHUP (SIGINT raises KeyboardInterrupt: finalizers run)."""
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    atexit.register(_stop_all_running)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _on_signal)
    _HANDLERS_INSTALLED = True


class LocalCluster(Cluster):
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, under `workdir`.

    `detach=True` (the demo) lets the processes outlive this Python process: stop them later with
    `terminate_groups(cluster.process_groups())`. Otherwise they are stopped by stop(), at exit, on SIGTERM/SIGHUP,
    and by the kernel if this process dies abruptly.

    `audit=True` makes the apiserver write an audit log (:data:`AUDIT_POLICY`, JSON lines) to :attr:`audit_log`;
    `admission_plugins` are enabled in addition to the apiserver's default ones (e.g.
    ``OwnerReferencesPermissionEnforcement``, which OpenShift enables and kube-apiserver does not by default).
    """

    def __init__(
        self, workdir: Path, *, bin_dir: Path | None = None, nodes: Iterable[str] = NODE_NAMES,
        detach: bool = False, timeout: float = 120.0, crds: Iterable[Path] = (), audit: bool = False,
        admission_plugins: Iterable[str] = (), host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir.resolve()
        self.host = host
        super().__init__(self.workdir / "kubeconfig", bin_dir)
        self.logs_dir = self.workdir / "logs"
        self.pki = self.workdir / "pki"
        self.node_names = tuple(nodes)
        self.detach = detach
        self.timeout = timeout
        self.crds = tuple(crds)
        self.audit = audit
        self.admission_plugins = tuple(admission_plugins)
        self.components: dict[str, Component] = {}
        self.timings: dict[str, float] = {}
        self.server = ""
        self._admin_token = ""

    # public API ---------------------------------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start every component and wait until each is ready (raises ComponentNotReady naming the one that is not)."""
        self._check_binaries()
        began = time.monotonic()
        self._prepare_workdir()
        if not self.detach:
            _install_cleanup_handlers()
        _RUNNING.append(self)
        try:
            self._start_all(began)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every component this object started (idempotent)."""
        stop_components(self.process_groups())
        for component in self.components.values():
            if component.proc:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.proc.wait(timeout=5)  # reap, keeping the exit status
        if self in _RUNNING:
            _RUNNING.remove(self)

    def process_groups(self) -> dict[str, int]:
        """Component name -> process group id, for stopping a detached cluster from another process."""
        return {n: c.proc.pid for n, c in self.components.items() if c.proc}

    @property
    def audit_log(self) -> Path:
        """The apiserver's audit log (JSON lines; only written with `audit=True`). Rotated copies, if any, lie next
        to it as ``audit-<time>.log``."""
        return self.logs_dir / "audit.log"  # type: ignore[operator]

    def api_get(self, path: str) -> Any:
        """GET a path of the apiserver as the admin and decode the JSON (raises urllib.error.HTTPError)."""
        return json.loads(self.api_get_text(path))

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.stop()

    # steps ----------------------------------------------------------------------------------------------------------

    def _check_binaries(self) -> None:
        missing = [b for b in (*BINARIES, KWOK_STAGES) if not (self.bin_dir / b).exists()]
        if missing:
            raise ClusterError(
                f"missing in {self.bin_dir}: {', '.join(missing)}; build them with `make cluster-bins` "
                "(localcluster/build-binaries.sh)"
            )

    def _prepare_workdir(self) -> None:
        for stale in ("etcd", "pki", "logs", "certs"):
            shutil.rmtree(self.workdir / stale, ignore_errors=True)
        self.logs_dir.mkdir(parents=True)  # type: ignore[union-attr]
        make_pki(self.pki, self.host)

    def _start_all(self, began: float) -> None:
        etcd_client, etcd_peer, api_port, cm_port, sched_port = free_ports(5)
        self.server = f"https://{self.host}:{api_port}"
        ids = {
            "admin": Identity("aitbc-admin", ("system:masters",)),
            "kube-controller-manager": Identity("system:kube-controller-manager", ()),
            "kube-scheduler": Identity("system:kube-scheduler", ()),
            "kwok": Identity("kwok-controller", ("system:masters",)),
            # A real node's agents (localcluster/node.py): the Node authorizer and NodeRestriction bound the kubelet.
            "kubelet": Identity(f"system:node:{REAL_NODE_NAME}", ("system:nodes",)),
            "kube-proxy": Identity("system:kube-proxy", ()),
        }
        self._admin_token = ids["admin"].token
        self._write_tokens_and_kubeconfigs(ids)

        self._launch("etcd", self._etcd_argv(etcd_client, etcd_peer))
        self._wait("etcd", began, lambda: self._http_ok(f"http://127.0.0.1:{etcd_client}/health", None))
        self._launch("kube-apiserver", self._apiserver_argv(etcd_client, api_port))
        self._wait("kube-apiserver", began, lambda: self._apiserver_ready())
        self._install_crds()
        self._launch("kube-controller-manager", self._controller_manager_argv(cm_port))
        self._launch("kube-scheduler", self._scheduler_argv(sched_port))
        if self.node_names:
            self._launch("kwok", self._kwok_argv())
        objects = [*(fake_node(n) for n in self.node_names), default_storage_class()]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait("kube-controller-manager", began, lambda: (
            self._http_ok(f"https://127.0.0.1:{cm_port}/healthz", insecure) and self._default_service_account()
        ))
        self._wait("kube-scheduler", began, lambda: self._http_ok(f"https://127.0.0.1:{sched_port}/healthz", insecure))
        if self.node_names:
            self._wait("kwok", began, self._nodes_ready)

    def _install_crds(self) -> None:
        """CRDs given to the constructor, installed before the controller-manager starts: its garbage collector
        then watches their kinds from the start (a CRD added later is picked up only by its next 30 s resync)."""
        if not self.crds:
            return
        self.apply_crds(self.crds)

    def _write_tokens_and_kubeconfigs(self, ids: Mapping[str, Identity]) -> None:
        lines = [f'{i.token},{i.user},{i.user},"{",".join(i.groups)}"' for i in ids.values()]
        (self.pki / "tokens.csv").write_text("\n".join(lines) + "\n")
        for name, identity in ids.items():
            path = self.kubeconfig if name == "admin" else self.workdir / f"{name}.kubeconfig"
            config = kubeconfig_dict(self.server, self.pki / "ca.crt", identity.user, identity.token)
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            path.chmod(0o600)

    def _etcd_argv(self, client: int, peer: int) -> list[str]:
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        return [
            str(self.bin_dir / "etcd"), "--name=default", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync",  # throwaway data: fsync only costs time
            "--log-level=warn",
        ]

    def _apiserver_argv(self, etcd_client: int, port: int) -> list[str]:
        pki = self.pki
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            # 127.0.0.1 by default; a real node's pods reach the apiserver through kubernetes.default, whose endpoint
            # is the advertised address, so that cluster binds and advertises the host's address.
            f"--bind-address={self.host}", f"--secure-port={port}", f"--advertise-address={self.host}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",  # no DNS name for the node: its IP
            # An (unused) front-proxy CA: without it controller-manager and scheduler log errors every second.
            f"--requestheader-client-ca-file={pki / 'ca.crt'}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",  # the operator's volume init container is privileged by default
            f"--cert-dir={self.workdir / 'certs'}",
            "--profiling=false",
            *self._optional_apiserver_args(),
        ]

    def _optional_apiserver_args(self) -> list[str]:
        plugins = ("NodeRestriction", *self.admission_plugins)
        args = [f"--enable-admission-plugins={','.join(dict.fromkeys(plugins))}"]
        if self.audit:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
            args += [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                     "--audit-log-maxsize=200", "--audit-log-maxbackup=2"]
        return args

    def _controller_manager_argv(self, port: int) -> list[str]:
        kc = self.workdir / "kube-controller-manager.kubeconfig"
        return [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={self.workdir / 'certs' / 'kcm'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",  # each controller with its own ServiceAccount, as in kubeadm
            f"--service-account-private-key-file={self.pki / 'sa.key'}", f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={self.pki / 'ca.crt'}", f"--cluster-signing-key-file={self.pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--enable-hostpath-provisioner=true",  # dynamic PersistentVolumes for the `standard` StorageClass
            "--profiling=false",
        ]

    def _scheduler_argv(self, port: int) -> list[str]:
        kc = self.workdir / "kube-scheduler.kubeconfig"
        return [
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false", "--profiling=false",
        ]

    def _kwok_argv(self) -> list[str]:
        key, value = KWOK_NODE_ANNOTATION
        return [
            str(self.bin_dir / "kwok"), f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
            f"--config={self.bin_dir / KWOK_STAGES}",  # node-fast + heartbeat-with-lease + pod-fast stages
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={key}={value}",
            "--node-lease-duration-seconds=40", f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1",
        ]

    # readiness ------------------------------------------------------------------------------------------------------

    def _launch(self, name: str, argv: list[str]) -> None:
        component = Component(name, argv, self.logs_dir / f"{name}.log")  # type: ignore[operator]
        self.components[name] = component
        env = {**os.environ, "HOME": str(self.workdir)}  # kwok reads ~/.kwok/kwok.yaml: keep the user's out of it
        component.start(detach=self.detach, env=env)

    def _wait(self, name: str, began: float, ready: Callable[[], bool]) -> None:
        component = self.components[name]
        deadline = began + self.timeout
        problem = "not ready yet"
        while True:
            code = component.exit_code()
            if code is not None:
                raise ComponentNotReady(name, f"exited with code {code}", component.log)
            try:
                if ready():
                    self.timings[name] = time.monotonic() - began
                    return
            except (OSError, ValueError, ClusterError) as error:  # connection refused, HTTP errors, bad JSON
                problem = f"last check failed: {error}"
            if time.monotonic() > deadline:
                raise ComponentNotReady(name, f"not ready {self.timeout:.0f} s after start ({problem})", component.log)
            time.sleep(0.2)

    @staticmethod
    def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            return bool(response.status == 200)

    def _apiserver_ready(self) -> bool:
        return self.api_get_text("/readyz").strip() == "ok"

    def api_get_text(self, path: str) -> str:
        """GET a path of the apiserver as the admin, as text."""
        headers = {"Authorization": f"Bearer {self._admin_token}"}
        request = urllib.request.Request(self.server + path, headers=headers)
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return str(response.read().decode())

    def _default_service_account(self) -> bool:
        """The service-account controller created `default` in `default`: controllers run and tokens can be made."""
        try:
            self.api_get("/api/v1/namespaces/default/serviceaccounts/default")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise
        return True

    def _nodes_ready(self) -> bool:
        nodes = {n["metadata"]["name"]: n for n in self.api_get("/api/v1/nodes")["items"]}
        for name in self.node_names:
            conditions = nodes.get(name, {}).get("status", {}).get("conditions", [])
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True


def main(argv: list[str]) -> int:
    """Start a cluster in the foreground until Ctrl-C or SIGTERM (for reusing it across test runs)."""
    workdir = Path(argv[0]) if argv else Path("/tmp/aitbc-k8s")
    cluster = LocalCluster(workdir)
    cluster.start()
    print(f"cluster up in {cluster.timings['total']:.1f} s; logs in {cluster.logs_dir}", flush=True)
    print(f"export AITBC_TEST_KUBECONFIG={cluster.kubeconfig} KUBECONFIG={cluster.kubeconfig}", flush=True)
    try:
        while True:
            signal.pause()  # SIGTERM/SIGHUP: the cleanup handler stops the cluster and exits
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
