"""Credentials for the Kubernetes API, without the official client: the pod's ServiceAccount when running in a
cluster, else a kubeconfig. Both kopf (its login handler, operator.py) and the operator's own client (client.py) use
them, as kopf's ``ConnectionInfo`` (which also makes the TLS context and the Authorization header).

They are read again whenever the API answers 401: the kubelet rotates a bound ServiceAccount token in its file well
before the old one expires, so a fresh read has the new one (kopf re-runs its login handler on a 401 the same way).

Own code rather than kopf's ``login_with_service_account`` / ``login_with_kubeconfig``: the first assumes the cluster
DNS name ``kubernetes.default.svc`` where client-go uses KUBERNETES_SERVICE_HOST/PORT (a cluster without DNS for the
operator's pod works too), the second reads only $KUBECONFIG and resolves relative file names against the working
directory instead of the kubeconfig's own (kubectl's rule).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf
import yaml

#: Where the kubelet mounts the pod's ServiceAccount token, CA and namespace.
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class LoginError(Exception):
    """No usable credentials: not in a cluster and no usable kubeconfig."""


def in_cluster(directory: Path = SERVICE_ACCOUNT) -> kopf.ConnectionInfo | None:
    """The pod's ServiceAccount (client-go's rules: KUBERNETES_SERVICE_HOST/PORT and the mounted token), else None."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token = directory / "token"
    if not host or not port or not token.is_file():
        return None
    namespace = directory / "namespace"
    ca = directory / "ca.crt"
    return kopf.ConnectionInfo(
        server=f"https://{f'[{host}]' if ':' in host else host}:{port}",
        ca_path=str(ca) if ca.is_file() else None,
        token=token.read_text().strip() or None,
        default_namespace=(namespace.read_text().strip() or None) if namespace.is_file() else None,
    )


def _kubeconfig_paths(path: str | None) -> list[Path]:
    if path:
        return [Path(path)]
    listed = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [Path("~/.kube/config").expanduser()]


def _merged(paths: list[Path]) -> tuple[str | None, dict[str, tuple[dict[str, Any], Path]]]:
    """kubectl's merge of several kubeconfigs: the first current-context and the first entry of each name win;
    each entry remembers its file (relative paths in it are relative to that file)."""
    current: str | None = None
    entries: dict[str, tuple[dict[str, Any], Path]] = {}
    for path in paths:
        if not path.is_file():
            continue
        config = yaml.safe_load(path.read_text()) or {}
        current = current or config.get("current-context")
        for section, key in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for item in config.get(section) or []:
                entries.setdefault(f"{section}/{item['name']}", (item.get(key) or {}, path))
    return current, entries


def from_kubeconfig(path: str | None = None) -> kopf.ConnectionInfo:
    """The current context of the kubeconfig ``path`` (default: $KUBECONFIG, else ~/.kube/config): a token (or
    tokenFile) or a client certificate, with the cluster's CA. Exec and auth-provider plugins are not supported."""
    paths = _kubeconfig_paths(path)
    current, entries = _merged(paths)
    if current is None or f"contexts/{current}" not in entries:
        raise LoginError(f"no current context in kubeconfig {os.pathsep.join(map(str, paths))}")
    context, _ = entries[f"contexts/{current}"]
    cluster, cluster_file = entries.get(f"clusters/{context.get('cluster')}", ({}, paths[0]))
    user, user_file = entries.get(f"users/{context.get('user')}", ({}, paths[0]))
    if "exec" in user or "auth-provider" in user:
        raise LoginError(f"kubeconfig user {context.get('user')!r} uses an exec or auth-provider plugin, which the "
                         "operator does not run: give it a token or a client certificate")

    def file(entry: dict[str, Any], key: str, base: Path) -> str | None:
        value = entry.get(key)
        return str((base.parent / Path(value).expanduser()).resolve()) if value else None

    token = user.get("token")
    if not token and (token_file := file(user, "tokenFile", user_file)):
        token = Path(token_file).read_text().strip()
    return kopf.ConnectionInfo(
        server=cluster.get("server") or "",
        ca_path=file(cluster, "certificate-authority", cluster_file),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=file(user, "client-certificate", user_file),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=file(user, "client-key", user_file),
        private_key_data=user.get("client-key-data"),
        username=user.get("username"),
        password=user.get("password"),
        token=token or None,
        default_namespace=context.get("namespace"),
    )


def login(kubeconfig: str | None = None) -> kopf.ConnectionInfo:
    """Credentials: the given kubeconfig; else in-cluster when in a pod, else $KUBECONFIG or ~/.kube/config."""
    if kubeconfig is None and (found := in_cluster()) is not None:
        return found
    return from_kubeconfig(kubeconfig)
