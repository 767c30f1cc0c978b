"""The only code that calls the Kubernetes API.

A thin, typed layer over HTTP: objects are plain dicts, writes are server-side apply with one field manager, and every
failed request is converted once into the operator's errors (see errors.py). Requests are asynchronous, on aiohttp
(kopf's own HTTP stack) in the event loop that calls them: no threads, no second HTTP client in the process. At most
AITBC_KUBE_CONNECTIONS requests are in flight (one pooled keep-alive connection each); credentials come from
k8s/auth.py and are read again once when a request is answered 401 (a rotated ServiceAccount token).
Writes that would change nothing are skipped (`apply_if_changed`, `patch_status`), so a steady cluster sees no writes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import kopf

from .. import __version__, errors, metrics
from .auth import LoginError, login
from .diff import is_subset
from .ownership import ownership_conflict
from .resources import SECRET, Kind, kind_of

log = logging.getLogger(__name__)

FIELD_MANAGER = "aitbc-operator"
#: The resourceVersion of a tracked object while a write to it is in flight or after one failed: matches no body.
UNKNOWN = ""
#: Watch streams a client may hold open next to its pooled requests (each on a connection of its own).
WATCH_STREAMS = 1
#: On every object the operator applies: a digest of the manifest last applied (see `with_fingerprint`).
ANNOTATION_APPLIED = "aitbc.io/applied-manifest"
Obj = dict[str, Any]
Objs = list[Obj]
Query = list[tuple[str, str]]


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


def _convert(status: int, data: bytes, what: str) -> errors.OperatorError:
    """The operator's error for a failed response (the apiserver's Status message, else the body's start)."""
    try:
        detail = str(json.loads(data).get("message", ""))
    except (ValueError, TypeError, AttributeError):
        detail = data[:200].decode("utf-8", "replace").strip()
    message = f"{what}: {detail or 'no message'} (HTTP {status})"
    if status == 404:
        return errors.NotFound(message)
    if status == 409:
        return errors.ApiConflict(message)
    if status == 410:
        return errors.Expired(message)
    if status == 403:
        return errors.Forbidden(message)
    if status in (400, 422):
        return errors.Invalid(message)
    return errors.ApiUnavailable(message)


class Kube:
    """Async facade over the Kubernetes API. Made once at startup (kopf memo), closed at cleanup (`aclose`).

    ``login`` returns the credentials (k8s/auth.py); it is called when the first request opens the session and again
    after a 401. The session belongs to the event loop of that first request.
    """

    def __init__(self, login: Callable[[], kopf.ConnectionInfo], *, request_timeout: float = 30.0,
                 connections: int = 8, track: tuple[Kind, ...] = ()) -> None:
        self._login = login
        self._timeout = request_timeout
        self._connections = connections
        self._slots = asyncio.Semaphore(connections)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info: kopf.ConnectionInfo | None = None
        self._fenced: str | None = None
        #: Requests made, by HTTP verb: tests and benchmarks assert on writes.
        self.calls: Counter[str] = Counter()
        #: Of the objects of the ``track`` kinds: the resourceVersion this client last read or got back from a write
        #: (UNKNOWN while a write is in flight or after one failed), for ``current``.
        self._track = frozenset(track)
        self._versions: dict[tuple[str, str, str], str] = {}

    @classmethod
    def connect(cls, kubeconfig: str | None = None, **kwargs: Any) -> Kube:
        """A Kube with the credentials of k8s/auth.py's `login` (in-cluster, else the kubeconfig)."""
        return cls(lambda: login(kubeconfig), **kwargs)

    @property
    def writes(self) -> int:
        """Number of write requests (POST/PUT/PATCH/DELETE) made so far."""
        return sum(n for verb, n in self.calls.items() if verb != "GET")

    async def aclose(self) -> None:
        """Close the session and its connections (in the loop that opened it)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def fence(self, why: str) -> None:
        """From now on refuse every request (any thread may call it): this replica stopped leading."""
        self._fenced = why

    # --- transport ----------------------------------------------------------------------------------------------------

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is not loop:
            raise RuntimeError("this Kube's session belongs to another event loop")
        if self._session is None:
            self._info = self._login()
            connector = aiohttp.TCPConnector(limit=self._connections + WATCH_STREAMS, ssl=self._info.as_ssl_context())
            headers = {"Accept": "application/json", "User-Agent": f"aitbc-operator/{__version__}"}
            self._session = aiohttp.ClientSession(connector=connector, headers=headers)
            self._loop = loop
        return self._session

    def _relogin(self, used: kopf.ConnectionInfo) -> bool:
        """After a 401 with ``used``: read the credentials again; whether they changed (worth one more try)."""
        if self._info is used:
            fresh = self._login()
            if fresh.as_http_headers() == used.as_http_headers():
                return False
            self._info = fresh
        return True

    async def _send(self, method: str, path: str, query: list[tuple[str, str]], payload: bytes | None,
                    headers: dict[str, str]) -> tuple[int, bytes, kopf.ConnectionInfo]:
        session = self._open()
        info = self._info
        assert info is not None
        async with session.request(method, info.server.rstrip("/") + path, params=query, data=payload,
                                   headers={**headers, **info.as_http_headers()}) as response:
            return response.status, await response.read(), info

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        seconds: float | None = None,
    ) -> Any:
        """One API request, within ``seconds`` (default: the client's request timeout) from when it may be sent -
        one more try included if a 401 made fresh credentials worth it; raises the operator's errors."""
        if self._fenced is not None:
            raise errors.Stopped(f"{method} {path}: not sent, {self._fenced}")
        headers = {"Content-Type": content_type or "application/json"} if body is not None else {}
        payload = json.dumps(body).encode() if body is not None else None
        self.calls[method] += 1
        if method != "GET":
            metrics.KUBE_WRITES.labels(method, resource_of(path)).inc()
        else:
            metrics.KUBE_READS.labels(read_verb(path), resource_of(path)).inc()
        limit = self._timeout if seconds is None else seconds
        try:
            async with self._slots, asyncio.timeout(limit):
                status, data, used = await self._send(method, path, query or [], payload, headers)
                if status == 401 and self._relogin(used):
                    status, data, _ = await self._send(method, path, query or [], payload, headers)
        except TimeoutError:
            raise errors.ApiUnavailable(f"{method} {path}: no answer within {limit:g} s") from None
        except (aiohttp.ClientError, LoginError, OSError) as exc:
            raise errors.ApiUnavailable(f"{method} {path}: {exc}") from exc
        if not 200 <= status <= 299:
            raise _convert(status, data, f"{method} {path}")
        return json.loads(data) if data else None

    # --- what this client saw of the tracked kinds --------------------------------------------------------------

    def _saw(self, kind: Kind, namespace: str, name: str, obj: Mapping[str, Any] | None) -> None:
        if kind in self._track:
            key = (kind.plural, namespace, name)
            if obj is None:
                self._versions.pop(key, None)
            else:
                self._versions[key] = str((obj.get("metadata") or {}).get("resourceVersion") or UNKNOWN)

    async def current(self, kind: Kind, body: Mapping[str, Any]) -> Obj | None:
        """``body`` as a watch delivered it, if it holds whatever this client wrote to the object: its resourceVersion
        is the one this client last read or wrote, or this client has neither read nor written the object; else the
        object read afresh (None: gone). Read-your-writes without a GET per reconcile. Only for ``track`` kinds."""
        assert kind in self._track, f"{kind.kind} is not tracked by this client"
        meta = body["metadata"]
        known = self._versions.get((kind.plural, meta["namespace"], meta["name"]))
        if known is None or known == meta.get("resourceVersion"):
            return dict(body)
        return await self.get(kind, meta["namespace"], meta["name"])

    def forget(self, kind: Kind, namespace: str, name: str) -> None:
        """The object is gone (its finalizer released): nothing to remember of it."""
        self._versions.pop((kind.plural, namespace, name), None)

    # --- reads --------------------------------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            obj: Obj = await self.request("GET", kind.path(namespace, name))
        except errors.NotFound:
            self._saw(kind, namespace, name, None)
            return None
        self._saw(kind, namespace, name, obj)
        return obj

    async def list(self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[Obj]:
        """Objects of a kind in a namespace (or all namespaces), optionally filtered by labels and fields."""
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        return (await self.list_versioned(kind, namespace, query=query))[0]

    async def list_versioned(self, kind: Kind, namespace: str | None = None, *,
                             query: Query | None = None) -> tuple[Objs, str]:
        """Objects of a kind and the list's resourceVersion: where a `watch` of the same objects continues."""
        path = kind.path(namespace) if namespace else kind.cluster_path()
        result: Obj = await self.request("GET", path, query=query)
        return result.get("items", []), str((result.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(self, kind: Kind, since: str, *, seconds: int) -> AsyncIterator[tuple[str, Obj]]:
        """The changes to every object of a kind (all namespaces) after resourceVersion ``since``, in order, as
        (ADDED | MODIFIED | DELETED | BOOKMARK, object), for about ``seconds`` (then the server ends the stream).

        On its own connection, outside the pool's slots. Raises `errors.Expired` when ``since`` is too old (list
        again), the operator's other errors when the stream cannot be opened or breaks."""
        if self._fenced is not None:
            raise errors.Stopped(f"WATCH {kind.plural}: not sent, {self._fenced}")
        session, path = self._open(), kind.cluster_path()
        info = self._info
        assert info is not None
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("resourceVersion", since),
                 ("timeoutSeconds", str(seconds))]
        metrics.KUBE_READS.labels("WATCH", resource_of(path)).inc()
        timeout = aiohttp.ClientTimeout(sock_connect=self._timeout, sock_read=seconds + self._timeout)
        try:
            async with session.get(info.server.rstrip("/") + path, params=query, headers=info.as_http_headers(),
                                   timeout=timeout) as response:
                if response.status == 401:
                    self._relogin(info)  # the next watch sends the fresh credentials
                if not 200 <= response.status <= 299:
                    raise _convert(response.status, await response.read(), f"WATCH {path}")
                async for line in _lines(response.content):
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise _convert(int(status.get("code") or 500), json.dumps(status).encode(), f"WATCH {path}")
                    yield str(event.get("type")), event.get("object") or {}
        except (TimeoutError, aiohttp.ClientError, LoginError, OSError) as exc:
            raise errors.ApiUnavailable(f"WATCH {path}: {exc or type(exc).__name__}") from exc

    async def get_namespace(self, name: str) -> Obj | None:
        """A Namespace, or None when it does not exist. Listed by name: the operator may list namespaces everywhere
        (kopf needs it), while ``get`` would need a grant of its own."""
        query = [("fieldSelector", f"metadata.name={name}")]
        result: Obj = await self.request("GET", "/api/v1/namespaces", query=query)
        items: list[Obj] = result.get("items", [])
        # Items of a list carry no kind: add it, so that the object can be an Event's involvedObject.
        return {"apiVersion": "v1", "kind": "Namespace", **items[0]} if items else None

    async def get_storage_class(self, name: str) -> Obj | None:
        """A StorageClass (cluster-scoped), or None when it does not exist."""
        try:
            obj: Obj = await self.request("GET", f"/apis/storage.k8s.io/v1/storageclasses/{name}")
        except errors.NotFound:
            return None
        return obj

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
        self._saw(kind, meta["namespace"], meta["name"], {})
        result: Obj = await self.request(
            "PATCH", kind.path(meta["namespace"], meta["name"]), query=query, body=obj,
            content_type="application/apply-patch+yaml",
        )
        self._saw(kind, meta["namespace"], meta["name"], result)
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
        self._saw(kind, namespace, name, {})  # until the answer tells: unknown (it may be lost after the write)
        result: Obj = await self.request(
            "PATCH", kind.path(namespace, name, subresource), body=patch, content_type="application/merge-patch+json"
        )
        self._saw(kind, namespace, name, result)
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


def _rest(path: str) -> list[str]:
    """``<resource>[/<name>[/<sub>]]`` of a REST path, split."""
    parts = path.split("?")[0].strip("/").split("/")
    # /api/v1/<rest> or /apis/<group>/<version>/<rest>; rest = [namespaces/<ns>/]<resource>[/<name>[/<sub>]]
    rest = parts[3:] if parts[0] == "apis" else parts[2:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    return rest


def resource_of(path: str) -> str:
    """The resource (and subresource) a REST path names: ``secrets``, ``aitbcnodes/status``, ``leases``."""
    rest = _rest(path)
    if not rest:
        return "unknown"
    return f"{rest[0]}/{rest[2]}" if len(rest) > 2 else rest[0]


def read_verb(path: str) -> str:
    """LIST for a GET of a collection, else GET."""
    return "LIST" if len(_rest(path)) == 1 else "GET"


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The non-empty lines of a stream, however long (aiohttp's ``readline`` refuses a line over 128 KiB)."""
    pending = b""
    async for chunk in content.iter_any():
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


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
