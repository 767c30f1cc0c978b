"""A real node for the local control plane: containerd + runc, a CNI bridge, kubelet and kube-proxy (root only).

The kwok nodes of :class:`~localcluster.cluster.LocalCluster` run nothing. This one runs the project's images for real:
the operator as a pod, the volume-preparation init container under a kubelet, the stand-in AITBC node and RPC.
Everything comes from Debian packages and Go modules (no Docker engine, no registry):

- containerd 1.6 (Debian) with runc (crun refuses this host's hybrid cgroup layout), the cgroupfs driver, the
  overlayfs snapshotter, ``restrict_oom_score_adj`` (the host forbids raising oom_score_adj), the sandbox image
  ``localhost/aitbc/pause:3.10`` (localcluster/images.py), network namespaces under its own state directory;
- CNI from Debian's containernetworking-plugins: a bridge ``aitbc0`` with host-local IPAM on 10.88.0.0/24, masquerade
  and portmap;
- kubelet and kube-proxy (iptables mode) of the pinned Kubernetes version (localcluster/build-binaries.sh), as node
  ``aitbc-worker`` (the name kind-config.yaml's worker has) with ``--node-ip`` the host's own address (loopback is
  refused); the apiserver binds and advertises that address, so ``kubernetes.default`` works from pods through
  kube-proxy. No cluster DNS is run: pods resolve with the host's resolv.conf, and Services are reached by ClusterIP
  (the operator reads the Service's IP; ``KUBERNETES_SERVICE_HOST`` is an IP too).

The kubelet cannot be told to leave the host alone entirely, so :func:`teardown` puts it back as it was found: pods
stopped through the CRI (which runs CNI DEL), shims killed, mounts under our directories unmounted, our iptables
chains and rules removed (``kube-proxy --cleanup``, then every ``KUBE-*``/``CNI-*`` chain and jump), the bridge
deleted, the ``kubepods`` cgroups removed, and the sysctls the kubelet and the node change restored. A record in
``/run/aitbc-localcluster/node.json`` (one real node per host) lets a later start clean up after a crashed run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cluster import REAL_NODE_NAME, ClusterError, Component, LocalCluster, tail_of, terminate_groups
from .images import Image, archive_digest, cache_root

HOST_STATE = Path("/run/aitbc-localcluster")
RECORD = HOST_STATE / "node.json"
POD_SUBNET = "10.88.0.0/24"
BRIDGE = "aitbc0"
CNI_NETWORK = "aitbc-pods"
SANDBOX_IMAGE = "localhost/aitbc/pause:3.10"
CNI_BIN_DIR = Path("/usr/lib/cni")
#: Host settings the node changes (forwarding for pod traffic) or the kubelet sets on start: restored at teardown.
SYSCTLS = (
    "net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "vm/overcommit_memory", "vm/panic_on_oom",
    "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
)
_CHAIN = re.compile(r"^(KUBE-|CNI-)")
#: What the real node needs from Debian (`make node-deps`).
PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "buildah", "podman",
            "mmdebstrap", "gcc", "libc6-dev")


def node_ip() -> str:
    """The host's own address on the interface of its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: routed by the default route, never a local address
        except OSError as exc:
            raise ClusterError("no default route: a real node needs a non-loopback address for --node-ip") from exc
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        raise ClusterError(f"the host's address is {address}: a real node needs a non-loopback one")
    return address


@dataclass
class Record:
    """What a running real node left on the host, for its teardown (also after a crash)."""

    workdir: str
    groups: dict[str, int] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    node_ip: str = ""

    def save(self) -> None:
        """Write the host-wide record."""
        HOST_STATE.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls) -> Record | None:
        """The record of the node running (or crashed) on this host, if any."""
        return cls(**json.loads(RECORD.read_text())) if RECORD.exists() else None


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """Serialise starts and teardowns of the real node on this host."""
    HOST_STATE.mkdir(parents=True, exist_ok=True)
    with (HOST_STATE / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RealNode:
    """containerd + kubelet + kube-proxy joined to a LocalCluster that binds a non-loopback address."""

    def __init__(self, cluster: LocalCluster, images: Sequence[Image], *, detach: bool = False,
                 timeout: float = 120.0, wait_for_host: float = 0.0) -> None:
        if cluster.host.startswith("127."):
            raise ClusterError("a real node needs the cluster to bind the host's address (LocalCluster(host=...))")
        self.cluster = cluster
        self.images = tuple(images)
        self.detach = detach
        self.timeout = timeout
        #: Seconds to wait for another real node on this host (another test run, the demo) to go, before refusing.
        self.wait_for_host = wait_for_host
        self.workdir = cluster.workdir / "node"
        self.state = HOST_STATE / "node"  # short: unix socket paths are limited to 107 bytes
        self.containerd_root = cache_root() / "node" / "containerd"  # images persist between runs
        self.components: dict[str, Component] = {}
        self.record = Record(workdir=str(self.workdir), node_ip=cluster.host)

    @property
    def socket(self) -> Path:
        """containerd's CRI socket."""
        return self.state / "containerd.sock"

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """crictl against this node's containerd."""
        argv = [str(self.cluster.bin_dir / "crictl"), f"--runtime-endpoint=unix://{self.socket}",
                f"--image-endpoint=unix://{self.socket}", "--timeout=30s", *args]
        result = subprocess.run(argv, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise ClusterError(f"crictl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    # --- start -------------------------------------------------------------------------------------------------------

    def start(self) -> RealNode:
        """Start containerd, import the images, start kubelet and kube-proxy, wait until the Node is Ready."""
        if os.geteuid() != 0:
            raise ClusterError("a real node needs root (containerd, kubelet, iptables, cgroups)")
        self._claim_host()
        began = time.monotonic()  # after the wait for the host: the timeout is for starting, not for queueing
        try:
            self._prepare()
            self._start_containerd()
            self._import_images()
            self._start_agents()
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        self.cluster.timings["real-node"] = time.monotonic() - began
        return self

    def _claim_host(self) -> None:
        """Become the host's one real node: clean up after a crashed one, wait (or refuse) while one runs."""
        deadline = time.monotonic() + self.wait_for_host
        while True:
            with host_lock():
                previous = Record.load()
                running = previous is not None and any(_alive(g) for g in previous.groups.values())
                if not running:
                    if previous is not None:
                        teardown(previous, bin_dir=self.cluster.bin_dir)  # a crashed run: clean up after it
                    self.record.sysctls = {name: _read_sysctl(name) for name in SYSCTLS}
                    self.record.save()
                    return
            if time.monotonic() > deadline:
                assert previous is not None
                raise ClusterError(f"a real node is already running on this host (from {previous.workdir}): "
                                   "stop it first (make demo-down, or end the test run that started it)")
            time.sleep(5)

    def _prepare(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        for path in (self.workdir / "cni", self.workdir / "logs", self.state, self.containerd_root):
            path.mkdir(parents=True, exist_ok=True)
        _write_sysctl("net/ipv4/ip_forward", "1")
        _write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
        (self.workdir / "cni" / "10-aitbc.conflist").write_text(json.dumps(cni_config(self.state), indent=2))
        (self.workdir / "containerd.toml").write_text(containerd_config(
            root=self.containerd_root, state=self.state, cni_conf_dir=self.workdir / "cni"))

    def _launch(self, name: str, argv: list[str]) -> None:
        component = Component(name, argv, self.workdir / "logs" / f"{name}.log")
        self.components[name] = component
        component.start(detach=self.detach)
        self.record.groups[name] = component.proc.pid  # type: ignore[union-attr]
        self.record.save()

    def _start_containerd(self) -> None:
        self._launch("containerd", ["containerd", f"--config={self.workdir / 'containerd.toml'}"])
        self._until(lambda: self.crictl("info", check=False).returncode == 0, "containerd", time.monotonic())
        # Containers of a crashed earlier run are in the persistent root: remove them (images stay).
        self.crictl("rmp", "--all", "--force", check=False)

    def _import_images(self) -> None:
        """Import each OCI archive unless containerd already has that exact manifest."""
        listed = subprocess.run(["ctr", f"--address={self.socket}", "--namespace=k8s.io", "images", "list"],
                                capture_output=True, text=True, check=True).stdout
        for image in self.images:
            if f"{image.ref} " in listed and archive_digest(image.archive) in listed:
                continue
            subprocess.run(["ctr", f"--address={self.socket}", "--namespace=k8s.io", "images", "import",
                            str(image.archive)], capture_output=True, text=True, check=True)

    def _start_agents(self) -> None:
        kubelet_dir = self.workdir / "kubelet"
        kubelet_dir.mkdir()
        config = kubelet_config(self.cluster.host, self.socket, self.cluster.pki / "ca.crt", self.workdir / "logs")
        (kubelet_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self._launch("kubelet", [
            str(self.cluster.bin_dir / "kubelet"), f"--config={kubelet_dir / 'config.yaml'}",
            f"--kubeconfig={self.cluster.workdir / 'kubelet.kubeconfig'}", f"--hostname-override={REAL_NODE_NAME}",
            f"--node-ip={self.cluster.host}", f"--root-dir={kubelet_dir / 'root'}", f"--cert-dir={kubelet_dir / 'pki'}",
            "--v=1",
        ])
        proxy = kube_proxy_config(self.cluster.host, self.cluster.workdir / "kube-proxy.kubeconfig")
        (self.workdir / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy, sort_keys=False))
        self._launch("kube-proxy", [str(self.cluster.bin_dir / "kube-proxy"),
                                    f"--config={self.workdir / 'kube-proxy.yaml'}", "--v=1"])

    def _wait_ready(self, began: float) -> None:
        def ready() -> bool:
            node = json.loads(self.cluster.kubectl("get", "node", REAL_NODE_NAME, "-o", "json", check=False).stdout
                              or "{}")
            conditions = (node.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        self._until(ready, "kubelet", began)

    def _until(self, predicate: Any, name: str, began: float) -> None:
        while not predicate():
            for component in self.components.values():
                if component.exit_code() is not None:
                    raise ClusterError(f"{component.name} exited ({component.exit_code()}); log {component.log}")
            if time.monotonic() - began > self.timeout:
                raise ClusterError(f"{name} not ready after {self.timeout:.0f} s; logs in {self.workdir / 'logs'}")
            time.sleep(0.2)

    # --- stop --------------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything and leave the host as it was found (idempotent)."""
        with host_lock():
            teardown(self.record, bin_dir=self.cluster.bin_dir, socket_path=self.socket)
        for component in self.components.values():
            if component.proc:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.proc.wait(timeout=5)

    def log_tails(self, lines: int = 30) -> str:
        """The tails of containerd's, the kubelet's and kube-proxy's logs."""
        logs = sorted((self.workdir / "logs").glob("*.log"))
        return "\n".join(f"--- {log} ---\n{tail_of(log, lines)}" for log in logs)


# --- configuration (pure) --------------------------------------------------------------------------------------------

def containerd_config(*, root: Path, state: Path, cni_conf_dir: Path) -> str:
    """containerd 1.6 configuration (version 2) for the CRI with runc, cgroupfs and our sandbox image."""
    return f"""version = 2
root = "{root}"
state = "{state / 'containerd'}"
[grpc]
  address = "{state / 'containerd.sock'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{shutil.which('runc') or '/usr/sbin/runc'}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf_dir}"
"""


def cni_config(state: Path) -> dict[str, Any]:
    """A bridge with host-local IPAM (its allocations under our state dir), masquerade, hairpin, portmap."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(state / "cni-ipam")}
    return {
        "cniVersion": "1.0.0", "name": CNI_NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(host: str, runtime: Path, client_ca: Path, pod_logs: Path) -> dict[str, Any]:
    """KubeletConfiguration for this host: cgroup v1 allowed, cgroupfs, authenticated and authorised API."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # this host has the hybrid cgroup v1 layout
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{runtime}",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(client_ca)}},
        "authorization": {"mode": "Webhook"},
        "address": host, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "failSwapOn": False, "resolvConf": "/etc/resolv.conf", "podLogsDir": str(pod_logs / "pods"),
        # Images are built locally and never pulled: never garbage-collect them, never evict for disk.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi"}, "serializeImagePulls": False,
        "cgroupsPerQOS": True, "enforceNodeAllocatable": ["pods"], "localStorageCapacityIsolation": False,
        "maxPods": 110,
    }


def kube_proxy_config(host: str, kubeconfig: Path) -> dict[str, Any]:
    """kube-proxy in iptables mode; no conntrack sysctl writes, no localhost NodePorts (no route_localnet)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": REAL_NODE_NAME, "bindAddress": host, "clusterCIDR": POD_SUBNET,
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


# --- teardown --------------------------------------------------------------------------------------------------------

def teardown(record: Record, *, bin_dir: Path, socket_path: Path | None = None) -> None:
    """Put the host back as the node found it: processes, containers, mounts, iptables, bridge, cgroups, sysctls."""
    socket_path = socket_path or HOST_STATE / "node" / "containerd.sock"
    agents = {n: g for n, g in record.groups.items() if n != "containerd"}
    terminate_groups(agents, timeout=10)
    if socket_path.exists() and "containerd" in record.groups and _alive(record.groups["containerd"]):
        crictl = [str(bin_dir / "crictl"), f"--runtime-endpoint=unix://{socket_path}", "--timeout=30s"]
        subprocess.run([*crictl, "rmp", "--all", "--force"], capture_output=True)  # CNI DEL for every pod
    terminate_groups({n: g for n, g in record.groups.items() if n == "containerd"}, timeout=10)
    _kill_shims(str(socket_path))
    _unmount_under((Path(record.workdir), HOST_STATE / "node", cache_root() / "node"))
    if (bin_dir / "kube-proxy").exists():
        subprocess.run([str(bin_dir / "kube-proxy"), "--cleanup"], capture_output=True)
    remove_chains()
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    _remove_cgroups("kubepods")
    for name, value in record.sysctls.items():
        with contextlib.suppress(OSError):
            _write_sysctl(name, value)
    for stale in Path("/var/lib/cni/results").glob(f"{CNI_NETWORK}-*"):
        stale.unlink(missing_ok=True)
    shutil.rmtree(HOST_STATE / "node", ignore_errors=True)
    RECORD.unlink(missing_ok=True)


def _kill_shims(address: str) -> None:
    """containerd-shim-runc-v2 processes of our containerd (they outlive it by design)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and address.encode() in b" ".join(cmdline):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _mountpoints() -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4].encode().decode("unicode_escape") for line in lines]


def _unmount_under(roots: Sequence[Path]) -> None:
    """Unmount everything mounted below our directories, deepest first."""
    prefixes = [str(r.resolve()) + "/" for r in roots]
    for _ in range(3):  # a mount can hide another one under it
        targets = sorted((m for m in _mountpoints() if any(m.startswith(p) for p in prefixes)), key=len, reverse=True)
        if not targets:
            return
        for target in targets:
            subprocess.run(["umount", "--lazy", target], capture_output=True)


def remove_chains() -> None:
    """Every KUBE-*/CNI-* chain and every rule jumping to one, in the IPv4 and IPv6 tables (kubelet's canaries and
    firewall, kube-proxy's leftovers, CNI's masquerade and portmap chains); nobody else's rules are touched."""
    for save, tool in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        dump = subprocess.run([save], capture_output=True, text=True).stdout
        for table, jumps, chains in iptables_cleanup_plan(dump):
            for rule in jumps:
                subprocess.run([tool, "-t", table, "-D", *rule], capture_output=True)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-F", chain], capture_output=True)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-X", chain], capture_output=True)


def iptables_cleanup_plan(dump: str) -> list[tuple[str, list[list[str]], list[str]]]:
    """From iptables-save output: per table, the rules of other chains that jump to ours, and our chains."""
    plan: list[tuple[str, list[list[str]], list[str]]] = []
    table = ""
    jumps: list[list[str]] = []
    chains: list[str] = []
    for line in dump.splitlines():
        if line.startswith("*"):
            table, jumps, chains = line[1:], [], []
        elif line.startswith(":") and _CHAIN.match(line[1:]):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            words = shlex.split(line)  # comments are quoted: `--comment "kubernetes service portals"`
            target = words[words.index("-j") + 1] if "-j" in words else ""
            if not _CHAIN.match(words[1]) and _CHAIN.match(target):
                jumps.append(words[1:])
        elif line == "COMMIT" and (jumps or chains):
            plan.append((table, jumps, chains))
    return plan


def _remove_cgroups(name: str) -> None:
    """rmdir the ``name`` cgroup tree in every hierarchy, leaves first (its processes are gone by now)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _read_sysctl(name: str) -> str:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return ""


def _write_sysctl(name: str, value: str) -> None:
    if value:
        (Path("/proc/sys") / name).write_text(value + "\n")


def host_leftovers() -> dict[str, list[str]]:
    """What a real node would leave behind if its teardown missed something (empty lists: a clean host)."""
    dump = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    dump6 = subprocess.run(["ip6tables-save"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {
        "iptables": [line for line in (dump + dump6).splitlines() if "KUBE-" in line or "CNI-" in line],
        "links": [line for line in links.splitlines() if f" {BRIDGE}:" in line or f" {BRIDGE}@" in line],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")],
        "mounts": [m for m in _mountpoints() if m.startswith(str(HOST_STATE) + "/")],
        "processes": [p for p in ("kubelet", "kube-proxy") if _process_named(p)],
    }


def _process_named(name: str) -> bool:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == name:
                    return True
    return False


class RealNodeCluster(LocalCluster):
    """A LocalCluster on the host's address with one real node (and no kwok nodes): the demo's and the e2e tests'.

    ``images``: the OCI archives to import (localcluster/images.py builds them). Stopping stops the node first, with
    the full host teardown, then the control plane.
    """

    def __init__(self, workdir: Path, images: Sequence[Image], *, wait_for_host: float = 0.0,
                 **kwargs: Any) -> None:
        kwargs.setdefault("host", node_ip())
        super().__init__(workdir, nodes=(), **kwargs)
        self.node = RealNode(self, images, detach=self.detach, timeout=self.timeout, wait_for_host=wait_for_host)

    def start(self) -> RealNodeCluster:
        """Control plane, then the node; on failure everything started is stopped again."""
        super().start()
        try:
            self.node.start()
        except BaseException:
            super().stop()
            raise
        self.timings["total"] = sum(v for k, v in self.timings.items() if k in ("total", "real-node"))
        return self

    def stop(self) -> None:
        """The node (host teardown), then the control plane."""
        self.node.stop()
        super().stop()

    def log_tails(self, lines: int = 30) -> str:
        """Control plane and node logs."""
        return super().log_tails(lines) + "\n" + self.node.log_tails(lines)
