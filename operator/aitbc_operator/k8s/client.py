"""The only code that calls the Kubernetes API.

A thin, typed layer over the official client's transport (configuration, auth, TLS): objects are plain dicts,
writes are server-side apply with one field manager, and every `ApiException` is converted once into the
operator's errors (see errors.py). Calls run on the client's own thread pool (sized by AITBC_KUBE_CLIENT_THREADS,
with as many pooled connections), so kopf's event loop is never blocked and no other work competes for those threads.
Writes that would change nothing are skipped (`apply_if_changed`, `patch_status`), so a steady cluster sees no writes.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from .. import errors, metrics
from .diff import is_subset
from .ownership import ownership_conflict
from .resources import SECRET, Kind, kind_of

log = logging.getLogger(__name__)

FIELD_MANAGER = "aitbc-operator"
#: On every object the operator applies: a digest of the manifest last applied (see `with_fingerprint`).
ANNOTATION_APPLIED = "aitbc.io/applied-manifest"
Obj = dict[str, Any]


def _digest(manifest: Mapping[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_fingerprint(manifest: Mapping[str, Any]) -> Obj:
    """The manifest with `ANNOTATION_APPLIED` set to a digest of the manifest itself.

    A subset comparison alone cannot see a field the operator stopped setting (e.g. a nodeSelector removed from the
    spec): the live object still has it, so desired looks like a subset of live and the apply that would remove it
    never runs. The digest changes whenever the manifest does, removals included.
    """
    meta = dict(manifest["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_APPLIED: _digest(manifest)}
    return {**manifest, "metadata": meta}


def carries_fingerprint(manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether ``live`` was last applied by the operator from this very manifest (its digest annotation matches).

    Then any difference between the two was made by someone else: a repair, not an update.
    """
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    return live is not None and annotations.get(ANNOTATION_APPLIED) == _digest(manifest)


def load_api_client(
    kubeconfig: str | None = None, *, connections: int | None = None, retries: int | None = None
) -> k8s_client.ApiClient:
    """An ApiClient from in-cluster config, else from the kubeconfig (KUBECONFIG or ~/.kube/config), keeping up to
    ``connections`` connections open (the client's default: 5 per CPU) and retrying a failed request ``retries``
    times within the call (urllib3's default: 3; each try has the whole timeout)."""
    configuration = k8s_client.Configuration()
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    configuration.retries = retries
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s_client.ApiClient(configuration)
        except k8s_config.ConfigException:
            pass
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return k8s_client.ApiClient(configuration)


def _convert(exc: ApiException, what: str) -> errors.OperatorError:
    detail = ""
    try:
        body = json.loads(exc.body or "{}")
        detail = body.get("message", "")
    except (ValueError, TypeError):
        detail = str(exc.reason or "")
    message = f"{what}: {detail or exc.reason} (HTTP {exc.status})"
    status = exc.status or 0
    if status == 404:
        return errors.NotFound(message)
    if status == 409:
        return errors.ApiConflict(message)
    if status == 403:
        return errors.Forbidden(message)
    if status in (400, 422):
        return errors.Invalid(message)
    return errors.ApiUnavailable(message)


class Kube:
    """Async facade over the Kubernetes API. Made once at startup (kopf memo), closed at cleanup."""

    def __init__(self, api_client: k8s_client.ApiClient, *, request_timeout: float = 30.0, threads: int = 8) -> None:
        self._api = api_client
        self._timeout = request_timeout
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="kube-api")
        self._fenced: str | None = None
        #: Requests made, by HTTP verb: tests and benchmarks assert on writes.
        self.calls: Counter[str] = Counter()

    @property
    def writes(self) -> int:
        """Number of write requests (POST/PUT/PATCH/DELETE) made so far."""
        return sum(n for verb, n in self.calls.items() if verb != "GET")

    def close(self) -> None:
        """Release the threads and the connection pool."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._api.close()

    def fence(self, why: str) -> None:
        """From now on refuse every request (any thread may call it): this replica stopped leading."""
        self._fenced = why

    # --- transport ----------------------------------------------------------------------------------------------------

    def request_sync(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One API request, blocking, within ``timeout`` seconds (default: the client's); raises the operator's errors.
        (Async code uses `request`.)"""
        if self._fenced is not None:
            raise errors.Stopped(f"{method} {path}: not sent, {self._fenced}")
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method_, url, header_params, body_, post = self._api.param_serialize(
            method=method, resource_path=path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        self.calls[method] += 1
        if method != "GET":
            metrics.KUBE_WRITES.labels(method, resource_of(path)).inc()
        try:
            response = self._api.call_api(
                method_, url, header_params=header_params, body=body_, post_params=post,
                _request_timeout=self._timeout if timeout is None else timeout,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise errors.ApiUnavailable(f"{method} {path}: {exc}") from exc
        data = response.read()
        if not 200 <= response.status <= 299:
            raise _convert(ApiException(http_resp=response), f"{method} {path}")
        return json.loads(data) if data else None

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        """One API request, on the client's threads; raises the operator's errors."""
        call = functools.partial(self.request_sync, method, path, query=query, body=body, content_type=content_type)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    # --- reads --------------------------------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            obj: Obj = await self.request("GET", kind.path(namespace, name))
        except errors.NotFound:
            return None
        return obj

    async def list(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[Obj]:
        """Objects of a kind in a namespace (or all namespaces), optionally filtered by labels and fields."""
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        path = kind.path(namespace) if namespace else kind.cluster_path()
        result: Obj = await self.request("GET", path, query=query)
        items: list[Obj] = result.get("items", [])
        return items

    async def get_namespace(self, name: str) -> Obj | None:
        """A Namespace, or None when it does not exist. Listed by name: the operator may list namespaces everywhere
        (kopf needs it), while ``get`` would need a grant of its own."""
        query = [("fieldSelector", f"metadata.name={name}")]
        result: Obj = await self.request("GET", "/api/v1/namespaces", query=query)
        items: list[Obj] = result.get("items", [])
        # Items of a list carry no kind: add it, so that the object can be an Event's involvedObject.
        return {"apiVersion": "v1", "kind": "Namespace", **items[0]} if items else None

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, base64-decoded to text (None when missing)."""
        secret = await self.get(SECRET, namespace, name)
        if secret is None:
            return None
        return decode_secret_data(secret)

    # --- writes -------------------------------------------------------------------------------------------------------

    async def apply(self, obj: Obj, *, force: bool = True) -> Obj:
        """Server-side apply of a full manifest with the operator's field manager."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        result: Obj = await self.request(
            "PATCH", kind.path(meta["namespace"], meta["name"]), query=query, body=obj,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def create(self, obj: Obj) -> Obj:
        """Create an object (POST) with the operator's field manager; ApiConflict when its name is taken."""
        kind = kind_of(obj)
        result: Obj = await self.request("POST", kind.path(obj["metadata"]["namespace"]), body=obj,
                                         query=[("fieldManager", FIELD_MANAGER)])
        return result

    async def apply_if_changed(self, obj: Obj, live: Obj | None) -> tuple[Obj, bool]:
        """Apply unless nothing would change; returns (object, whether written).

        ``live`` is the object read just before (None: absent). One that is not ours (see k8s/ownership.py) is never
        written over: NameConflict names it and its owner.
        Nothing changes when the live object carries the digest of this very manifest (so a field the operator
        stopped setting, which server-side apply would remove, is noticed) and still holds every desired field (so a
        hand edit of an owned field is reverted).
        """
        conflict = ownership_conflict(obj, live)
        if conflict is not None:
            raise errors.NameConflict(conflict)
        desired = with_fingerprint(obj)
        if live is not None and carries_fingerprint(obj, live) and is_subset(desired, live):
            return live, False
        return await self.apply(desired), True

    async def merge_patch(
        self, kind: Kind, namespace: str, name: str, patch: Obj, *, subresource: str | None = None
    ) -> Obj:
        """A JSON merge patch (e.g. metadata annotations, or the status subresource)."""
        result: Obj = await self.request(
            "PATCH", kind.path(namespace, name, subresource), body=patch, content_type="application/merge-patch+json"
        )
        return result

    async def scale(self, kind: Kind, live: Mapping[str, Any] | None, replicas: int) -> bool:
        """Set spec.replicas of a live workload (a merge patch of that field alone) unless it already has it."""
        if live is None or (live.get("spec") or {}).get("replicas") == replicas:
            return False
        meta = live["metadata"]
        await self.merge_patch(kind, meta["namespace"], meta["name"], {"spec": {"replicas": replicas}})
        return True

    async def patch_status(self, kind: Kind, obj: Mapping[str, Any], status: Obj) -> bool:
        """Write `status` (merge patch on the status subresource) unless it equals the current one; returns written."""
        current = obj.get("status") or {}
        if is_subset(status, current) and is_subset(current, status, ignore_extra_in_desired=True):
            return False
        patch: Obj = {"status": _nulls_for_removed(current, status)}
        meta = obj["metadata"]
        await self.merge_patch(kind, meta["namespace"], meta["name"], patch, subresource="status")
        return True


def resource_of(path: str) -> str:
    """The resource (and subresource) a REST path names: ``secrets``, ``aitbcnodes/status``, ``leases``."""
    parts = path.split("?")[0].strip("/").split("/")
    # /api/v1/<rest> or /apis/<group>/<version>/<rest>; rest = [namespaces/<ns>/]<resource>[/<name>[/<sub>]]
    rest = parts[3:] if parts[0] == "apis" else parts[2:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return "unknown"
    return f"{rest[0]}/{rest[2]}" if len(rest) > 2 else rest[0]


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's `data` decoded from base64 (undecodable bytes replaced), plus `stringData` if present."""
    out = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})
    return out


def _nulls_for_removed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> Obj:
    """Merge-patch body: desired, plus explicit nulls for keys that must disappear, at every level of nested objects
    (a merge patch keeps a key it does not mention; lists are replaced whole)."""
    patch: Obj = dict(desired)
    for key, value in current.items():
        if key not in desired:
            patch[key] = None
        elif isinstance(value, Mapping) and isinstance(desired[key], Mapping):
            patch[key] = _nulls_for_removed(value, desired[key])
    return patch
