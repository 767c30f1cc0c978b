"""`make demo`: PostgreSQL, a local cluster, the operator, the samples, then their status.

    python -m localcluster.demo up      # start everything (state, logs and kubeconfig under .demo/)
    python -m localcluster.demo status  # print the resources again
    python -m localcluster.demo down    # stop everything, put the host back, remove .demo/

Two modes (``AITBC_DEMO_MODE``; unset: ``real`` when run as root, else ``kwok``), and the output says which ran:

- ``real``: the control plane plus a real node (kubelet, containerd, runc, CNI, kube-proxy: localcluster/node.py)
  running containers. The images are built here from the project's Dockerfiles (localcluster/images.py); the operator
  runs **as a pod** from its image through ``deploy/overlays/local`` under the generated RBAC; the samples come from
  ``deploy/samples-local`` (the AitbcNode runs the stand-in node/RPC on a hostPath backed by a loop-mounted Btrfs at
  /var/lib/aitbc/demo, so NOCOW is real); PostgreSQL listens on the host's address so that pods reach it.
- ``kwok``: simulated nodes, nothing runs in the pods; the operator runs as a process on the host. For machines
  where the real node cannot run (not root, no containerd).

Nothing is faked: what `kubectl get aitbc -A` shows is what the operator reported.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localcluster.cluster import (
    Cluster,
    ClusterError,
    LocalCluster,
    crd_files,
    free_ports,
    process_alive,
    stop_components,
    tail_of,
    terminate_groups,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
STATE = DEMO / "state.json"
NAMESPACE = "aitbc-demo"
ADMIN_ROLE = "aitbc_admin"
WAIT_SECONDS = float(os.environ.get("AITBC_DEMO_WAIT", "120"))
#: The AitbcNode's hostPath in deploy/samples-local: under the operator's default allowed prefix /var/lib/aitbc.
CHAIN_MOUNT = Path("/var/lib/aitbc/demo")
MODES = ("real", "kwok")


def say(message: str) -> None:
    """Progress on stderr, so that stdout carries only the final status."""
    print(f"[demo] {message}", file=sys.stderr, flush=True)


@dataclass
class State:
    """What `up` started, for `status` and `down`."""

    mode: str = "kwok"
    groups: dict[str, int] = field(default_factory=dict)  # component -> process group id (operator, cluster)
    pg_data: str = ""
    pg_port: int = 0
    pg_host: str = "127.0.0.1"
    kubeconfig: str = ""
    btrfs_image: str = ""

    def save(self) -> None:
        """Write .demo/state.json (after every step, so `down` can clean up a half-finished `up`)."""
        DEMO.mkdir(exist_ok=True)
        STATE.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls) -> State | None:
        """The recorded state, or None when no demo was started."""
        return cls(**json.loads(STATE.read_text())) if STATE.exists() else None


def choose_mode() -> tuple[str, str]:
    """The mode to run and why."""
    wanted = os.environ.get("AITBC_DEMO_MODE", "").strip().lower()
    if wanted and wanted not in MODES:
        raise ClusterError(f"AITBC_DEMO_MODE={wanted!r}: use one of {', '.join(MODES)}")
    if wanted == "kwok":
        return "kwok", "AITBC_DEMO_MODE=kwok: simulated nodes, no container runs"
    if os.geteuid() != 0:
        if wanted == "real":
            raise ClusterError("AITBC_DEMO_MODE=real needs root (containerd, kubelet, iptables, a loop device)")
        return "kwok", "not root, so no real node: simulated nodes, no container runs (AITBC_DEMO_MODE=real as root)"
    return "real", "a real kubelet and containerd run the pods (AITBC_DEMO_MODE=kwok for simulated nodes)"


# --- PostgreSQL -------------------------------------------------------------------------------------------------------

def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server (`make system-deps` installs postgresql-15)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise ClusterError("no PostgreSQL server under /usr/lib/postgresql: run `make system-deps`")
    return found[-1].parent


def as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def start_postgres(state: State) -> tuple[str, str]:
    """initdb + start a server on a free port (127.0.0.1, and the host's address for pods in real mode); create the
    admin role (CREATEROLE CREATEDB, not superuser). Returns (admin user, password)."""
    import psycopg
    from psycopg import sql

    pg_bin, base = postgres_bin(), DEMO / "postgres"
    base.mkdir(parents=True)
    superuser_password, admin_password = secrets.token_hex(16), secrets.token_hex(16)
    pwfile = base / "superuser-password"
    pwfile.write_text(superuser_password + "\n")
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    data = base / "data"
    run([*as_postgres(), str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
         "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"])
    if state.pg_host != "127.0.0.1":  # pods connect from the pod network: scram-sha-256 from anywhere
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
    (port,) = free_ports(1)
    listen = ",".join(dict.fromkeys(("127.0.0.1", state.pg_host)))
    options = f"-p {port} -c listen_addresses={listen} -k {shlex.quote(str(base))}"
    state.pg_data, state.pg_port = str(data), port
    state.save()
    run([*as_postgres(), str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"), "-o", options,
         "-w", "-t", "60", "start"], new_session=True)  # its own session: a Ctrl-C here does not stop the server
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=superuser_password,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD {}").format(
            sql.Identifier(ADMIN_ROLE), sql.Literal(admin_password)))
    return ADMIN_ROLE, admin_password


def stop_postgres(state: State) -> None:
    """pg_ctl stop (fast), when a data directory was recorded."""
    if state.pg_data and Path(state.pg_data, "postmaster.pid").exists():
        run([*as_postgres(), str(postgres_bin() / "pg_ctl"), "-D", state.pg_data, "-m", "fast", "-w", "stop"],
            check=False)


def admin_secret(user: str, password: str, host: str, port: int) -> dict[str, Any]:
    """The `postgres-admin` Secret the samples reference (keys uri, host, port, username, password)."""
    uri = f"postgresql://{urllib.parse.quote(user)}:{urllib.parse.quote(password)}@{host}:{port}/postgres"
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "postgres-admin", "namespace": NAMESPACE},
        "stringData": {"uri": uri, "host": host, "port": str(port), "username": user, "password": password},
    }


# --- steps ------------------------------------------------------------------------------------------------------------

def run(argv: list[str], *, check: bool = True, new_session: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise ClusterError with its output."""
    result = subprocess.run(argv, capture_output=True, text=True, start_new_session=new_session)
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise ClusterError(f"{Path(argv[0]).name} failed ({result.returncode}): {output}")
    return result


def install_crds(cluster: Cluster) -> None:
    """Apply crds/ and wait until the CRDs are Established."""
    cluster.apply_crds(crd_files())


def start_operator_process(state: State, kubeconfig: Path) -> None:
    """kwok mode: `aitbc-operator run --standalone` in the background, log in .demo/operator.log."""
    health, metrics = free_ports(2)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "AITBC_HEALTH_PORT": str(health),
           "AITBC_METRICS_PORT": str(metrics), "AITBC_LEADER_ELECTION": "false", "AITBC_NODE_POLL_INTERVAL": "5"}
    with (DEMO / "operator.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aitbc_operator.cli", "run", "--standalone"], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    state.groups["operator"] = proc.pid
    state.save()
    deadline = time.monotonic() + 5  # a broken operator usually dies at import or startup: tell it now
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None:
        say(f"the operator exited with code {proc.returncode}; last lines of .demo/operator.log:\n"
            f"{tail_of(DEMO / 'operator.log', 20)}")


def start_operator_pod(cluster: Cluster) -> None:
    """real mode: the operator's Deployment from deploy/overlays/local, waited for until its pod is Ready."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "deploy" / "overlays" / "local"))
    cluster.kubectl("-n", "aitbc-system", "rollout", "status", "deployment/aitbc-operator", "--timeout=120s",
                    timeout=150)


def resources(cluster: Cluster) -> list[dict[str, Any]]:
    """Every AitbcDatabase and AitbcNode."""
    items: list[dict[str, Any]] = json.loads(cluster.kubectl("get", "aitbc", "-A", "-o", "json").stdout)["items"]
    return items


def is_ready(obj: dict[str, Any]) -> bool:
    """Ready=True and observedGeneration current."""
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ready and status.get("observedGeneration") == obj["metadata"].get("generation")


def wait_for_resources(cluster: Cluster, seconds: float) -> tuple[int, int]:
    """Poll until every resource is Ready or the time is up; (ready, total)."""
    deadline = time.monotonic() + seconds
    while True:
        items = resources(cluster)
        ready = sum(is_ready(o) for o in items)
        if (items and ready == len(items)) or time.monotonic() > deadline:
            return ready, len(items)
        time.sleep(1)


def heights(cluster: Cluster) -> dict[str, dict[str, int | None]]:
    """Per AitbcNode, the RPC head height of each chain as the operator last reported it."""
    out: dict[str, dict[str, int | None]] = {}
    for obj in resources(cluster):
        if obj["kind"] == "AitbcNode":
            chains = (obj.get("status") or {}).get("chains") or []
            out[obj["metadata"]["name"]] = {c["chainId"]: c.get("height") for c in chains}
    return out


# --- the two modes ----------------------------------------------------------------------------------------------------

def up_real(state: State) -> Cluster:
    """Images, Btrfs, PostgreSQL on the host's address, control plane + real node, operator pod, samples."""
    from localcluster.btrfs import LoopBtrfs
    from localcluster.images import Builder
    from localcluster.node import RealNodeCluster, node_ip

    say("building the images (cached: pause, python base, aitbc-operator:dev, aitbc-standin:dev)")
    images = Builder().all()
    state.pg_host = node_ip()
    say(f"loop-mounting a Btrfs at {CHAIN_MOUNT} for the AitbcNode's hostPath")
    state.btrfs_image = str(DEMO / "chain-btrfs.img")
    state.save()
    LoopBtrfs(Path(state.btrfs_image), CHAIN_MOUNT, size="512M").open()
    say(f"starting PostgreSQL 15 on 127.0.0.1 and {state.pg_host}")
    user, password = start_postgres(state)
    say("starting the control plane and a real node (containerd, kubelet, kube-proxy)")
    cluster = RealNodeCluster(DEMO / "cluster", images, detach=True, crds=crd_files())
    try:
        cluster.start()
    finally:
        state.groups.update(cluster.process_groups())
        state.kubeconfig = str(cluster.kubeconfig)
        state.save()
    say(f"cluster and node ready in {cluster.timings['total']:.1f} s; the operator as a pod (deploy/overlays/local)")
    start_operator_pod(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(admin_secret(user, password, state.pg_host,
                                                                          state.pg_port)))
    say(f"applying deploy/samples-local to namespace {NAMESPACE}")
    cluster.kubectl("apply", "-k", str(ROOT / "deploy" / "samples-local"))
    return cluster


def up_kwok(state: State) -> Cluster:
    """PostgreSQL, control plane with kwok nodes, the operator as a host process, crds/samples."""
    say("starting PostgreSQL 15 on 127.0.0.1")
    user, password = start_postgres(state)
    say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    cluster = LocalCluster(DEMO / "cluster", detach=True, crds=crd_files())
    try:
        cluster.start()
    finally:
        state.groups.update(cluster.process_groups())
        state.kubeconfig = str(cluster.kubeconfig)
        state.save()
    say(f"control plane ready in {cluster.timings['total']:.1f} s; installing the CRDs")
    install_crds(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(admin_secret(user, password, "127.0.0.1",
                                                                          state.pg_port)))
    say("starting the operator (a process on this host)")
    start_operator_process(state, cluster.kubeconfig)
    say(f"applying crds/samples to namespace {NAMESPACE}")
    cluster.kubectl("apply", "-n", NAMESPACE, "-k", str(ROOT / "crds" / "samples"))
    return cluster


# --- output -----------------------------------------------------------------------------------------------------------

def print_status(cluster: Cluster, state: State) -> None:
    """`kubectl get aitbc -A`, the children, the heights, and how to go on."""
    real = state.mode == "real"
    print(f"mode: {state.mode} - " + ("a real node: kubelet + containerd run every pod, the operator included"
                                      if real else "simulated (kwok) nodes: nothing runs inside the pods"))
    print("\n$ kubectl get aitbc -A")
    print(cluster.kubectl("get", "aitbc", "-A").stdout.rstrip() or "(none)")
    children = cluster.kubectl("get", "statefulsets,deployments,pods,services,configmaps,secrets", "-n", NAMESPACE,
                               "--field-selector=metadata.name!=kube-root-ca.crt", check=False)
    print(f"\n$ kubectl get statefulsets,deployments,pods,services,configmaps,secrets -n {NAMESPACE}")
    print(children.stdout.rstrip() or children.stderr.rstrip())
    if real:
        print_volume_and_heights(cluster)
        print("\n$ kubectl get pods -n aitbc-system")
        print(cluster.kubectl("get", "pods", "-n", "aitbc-system", check=False).stdout.rstrip())
    else:
        operator = state.groups.get("operator")
        alive = operator is not None and process_alive(operator)
        print(f"\noperator: {'running' if alive else 'NOT running'} (log: {DEMO / 'operator.log'})")
    print(f"PostgreSQL: {state.pg_host}:{state.pg_port} (log: {DEMO / 'postgres' / 'postgres.log'})")
    print(f"logs: {DEMO / 'cluster' / 'logs'}" + (f", {DEMO / 'cluster' / 'node' / 'logs'}" if real else ""))
    print(f"try it:  export KUBECONFIG={state.kubeconfig}")
    print("stop it: make demo-down")


def print_volume_and_heights(cluster: Cluster) -> None:
    """The init container's report and the RPC head heights, twice, to show that the node writes blocks."""
    for obj in resources(cluster):
        if obj["kind"] == "AitbcNode":
            volume = (obj.get("status") or {}).get("volume") or {}
            chains = ", ".join(f"{c.get('chain')}: nocow {c.get('nocow')}, "
                               + (f"journal {c['journal']}" if c.get("journal") else "no chain.db yet (new volume)")
                               for c in volume.get("chains") or [])
            print(f"\nAitbcNode {obj['metadata']['name']} volume (the init container's report): fs {volume.get('fs')}, "
                  f"nocow {volume.get('nocow')}; {chains}")
    deadline = time.monotonic() + 30
    first = heights(cluster)
    while any(h is None for chains in first.values() for h in chains.values()) and time.monotonic() < deadline:
        time.sleep(1)
        first = heights(cluster)
    print(f"RPC head heights: {json.dumps(first)}")
    deadline = time.monotonic() + 20
    later = first
    while later == first and time.monotonic() < deadline:
        time.sleep(1)
        later = heights(cluster)
    print(f"RPC head heights {'a few seconds later' if later != first else 'unchanged after 20 s'}: "
          f"{json.dumps(later)}")


# --- commands ---------------------------------------------------------------------------------------------------------

def up() -> int:
    """Start everything and print the status; on failure stop what was started and keep the logs."""
    existing = State.load()
    cluster_groups = {n: g for n, g in (existing.groups if existing else {}).items() if n != "operator"}
    if existing and cluster_groups and all(process_alive(g) for g in cluster_groups.values()):
        say("already running")
        print_status(Cluster(Path(existing.kubeconfig)), existing)
        return 0
    if existing:
        say("cleaning up a previous demo that is no longer running")
        down(remove=True)
    began = time.monotonic()
    DEMO.mkdir(exist_ok=True)
    try:
        mode, why = choose_mode()
        say(f"mode: {mode}: {why}")
        state = State(mode=mode)
        state.save()
        cluster = up_real(state) if mode == "real" else up_kwok(state)
        say(f"waiting up to {WAIT_SECONDS:.0f} s for the resources to become Ready")
        ready, total = wait_for_resources(cluster, WAIT_SECONDS)
    except BaseException as error:
        say(f"FAILED: {error}\nstopping what was started; logs kept in {DEMO}")
        down(remove=False)
        return 1
    say(f"up in {time.monotonic() - began:.0f} s; {ready} of {total} resources Ready")
    print_status(cluster, state)
    return 0


def status() -> int:
    """Print the status of a running demo."""
    state = State.load()
    if state is None or not state.kubeconfig:
        say("no demo running (make demo)")
        return 1
    print_status(Cluster(Path(state.kubeconfig)), state)
    return 0


def down(*, remove: bool = True) -> int:
    """Stop the operator, the node (host teardown), the control plane, PostgreSQL and the Btrfs; remove .demo/."""
    state = State.load()
    if state is not None:
        terminate_groups({n: g for n, g in state.groups.items() if n == "operator"})
        if state.mode == "real":
            from localcluster.cluster import default_bin_dir
            from localcluster.node import Record, host_lock, teardown

            with host_lock():
                record = Record.load()
                if record is not None:
                    teardown(record, bin_dir=default_bin_dir())
        stop_components({n: g for n, g in state.groups.items() if n != "operator"})
        stop_postgres(state)
        if state.btrfs_image:
            from localcluster.btrfs import detach_image

            detach_image(Path(state.btrfs_image), CHAIN_MOUNT)
            for empty in (CHAIN_MOUNT, CHAIN_MOUNT.parent):
                if empty.is_dir() and not any(empty.iterdir()):
                    empty.rmdir()
    if remove:
        shutil.rmtree(DEMO, ignore_errors=True)
        say("demo stopped and .demo/ removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: up | status | down."""
    parser = argparse.ArgumentParser(prog="python -m localcluster.demo", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "status", "down"])
    args = parser.parse_args(argv)
    commands = {"up": up, "status": status, "down": down}
    return commands[args.command]()


if __name__ == "__main__":
    sys.exit(main())
