"""Compare what the operator's RBAC grants (operator/aitbc_operator/rbac.py) with what it actually did, as recorded
in the kube-apiserver's audit log (localcluster/cluster.py, ``LocalCluster(audit=True)``).

Pure functions over audit events (dicts, one per JSON line) and the roles of rbac.py:

- :func:`requests_of`: the resource requests one user made (group, resource[/subresource], verb, namespace, name,
  response code), one per audit ID. A server-side apply that *created* its object (HTTP 201) also counts as a
  ``create``: the apiserver authorizes ``create`` in addition to ``patch`` for it, without a second audit event.
- :func:`grants`: every (role, group, resource, verb) of rbac.py, with the role's scope and the rule's resourceNames.
- :func:`ungranted` (requests no grant allows) and :func:`unused` (grants no request needed).
- :func:`collection_reads`: the lists and watches of some resources, with their label selectors.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitbc_operator import rbac

Event = Mapping[str, Any]


@dataclass(frozen=True)
class Request:
    """One authorized action: a resource request, or one the apiserver authorized on its behalf (`derived`)."""

    group: str
    resource: str  # "secrets", "aitbcnodes/status", ...
    verb: str
    namespace: str | None
    name: str | None
    code: int | None = None
    derived: str = ""  # why this action is implied by another request ("" for a request in the log itself)

    @property
    def key(self) -> tuple[str, str, str]:
        """(group, resource, verb)."""
        return self.group, self.resource, self.verb

    def __str__(self) -> str:
        where = f"{self.namespace or '(cluster)'}/{self.name or '*'}"
        return f"{self.verb} {self.group or 'core'}/{self.resource} {where} -> {self.code}" + (
            f" [{self.derived}]" if self.derived else "")


@dataclass(frozen=True)
class Grant:
    """One verb on one resource of one rule, as bound by deploy/base (ClusterRoles cluster-wide, the Role in the
    operator's namespace)."""

    role: str
    group: str
    resource: str
    verb: str
    namespace: str | None  # None: every namespace
    names: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        """(group, resource, verb)."""
        return self.group, self.resource, self.verb

    def allows(self, request: Request) -> bool:
        """Whether this grant authorizes the request (RBAC's matching: resourceNames only limit named requests)."""
        if request.key != self.key:
            return False
        if self.namespace is not None and request.namespace != self.namespace:
            return False
        return not self.names or request.name in self.names

    def __str__(self) -> str:
        names = f" named {','.join(self.names)}" if self.names else ""
        return f"{self.role}: {self.verb} {self.group or 'core'}/{self.resource}{names}"


#: What a server-side apply that created its object was also authorized for.
CREATED_BY_APPLY = "server-side apply created the object (HTTP 201): create was authorized too"


def read_events(log: Path) -> list[dict[str, Any]]:
    """Every audit event of the log and of its rotated copies (``audit-<time>.log``), oldest file first."""
    files = [*sorted(log.parent.glob(f"{log.stem}-*{log.suffix}")), log]
    events: list[dict[str, Any]] = []
    for path in files:
        if path.exists():
            events.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return events


def _resource(ref: Mapping[str, Any]) -> str:
    sub = ref.get("subresource")
    return f"{ref['resource']}/{sub}" if sub else str(ref["resource"])


def requests_of(events: Iterable[Event], username: str) -> list[Request]:
    """The resource requests `username` made, one per audit ID (the last stage seen wins: it has the final code)."""
    by_id: dict[str, Event] = {}
    for event in events:
        if (event.get("user") or {}).get("username") == username and event.get("objectRef", {}).get("resource"):
            by_id[event["auditID"]] = event
    out = []
    for event in by_id.values():
        ref = event["objectRef"]
        code = (event.get("responseStatus") or {}).get("code")
        request = Request(ref.get("apiGroup", ""), _resource(ref), event["verb"], ref.get("namespace"),
                          ref.get("name"), code)
        out.append(request)
        if request.verb == "patch" and code == 201:
            out.append(Request(request.group, request.resource, "create", request.namespace, request.name, code,
                               CREATED_BY_APPLY))
    return out


@dataclass(frozen=True)
class CollectionRead:
    """One list or watch request: what it read, where, and with which label selector ("" when none)."""

    verb: str
    resource: str
    namespace: str | None
    label_selector: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource} in {self.namespace or '(all namespaces)'} selector={self.label_selector!r}"


def collection_reads(events: Iterable[Event], username: str, resources: Collection[str]) -> list[CollectionRead]:
    """Every list and watch of `resources` (core or any group) by `username`, one per audit ID."""
    by_id: dict[str, Event] = {}
    for event in events:
        ref = event.get("objectRef") or {}
        if ((event.get("user") or {}).get("username") == username and event.get("verb") in ("list", "watch")
                and ref.get("resource") in resources and not ref.get("subresource")):
            by_id[event["auditID"]] = event
    out = []
    for event in by_id.values():
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(str(event.get("requestURI", ""))).query)
        out.append(CollectionRead(event["verb"], event["objectRef"]["resource"], event["objectRef"].get("namespace"),
                                  query.get("labelSelector", [""])[0]))
    return out


def non_resource_paths(events: Iterable[Event], username: str) -> set[str]:
    """Paths `username` requested that are not resources (discovery: /api, /apis, /version, ...)."""
    return {str(e.get("requestURI", "")).split("?")[0] for e in events
            if (e.get("user") or {}).get("username") == username and not e.get("objectRef", {}).get("resource")}


def grants(operator_namespace: str, roles: Iterable[rbac.Role] | None = None) -> list[Grant]:
    """Every verb of every rule (of rbac.ROLES by default), scoped as deploy/base binds the roles."""
    out = []
    for role in rbac.ROLES if roles is None else roles:
        for rule in role.rules:
            for group in rule.api_groups:
                for resource in rule.resources:
                    for verb in rule.verbs:
                        out.append(Grant(role.suffix, group, resource, verb,
                                         operator_namespace if role.namespaced else None, rule.resource_names))
    return out


def ungranted(requests: Iterable[Request], granted: Iterable[Grant]) -> list[Request]:
    """Requests that no grant allows (they were refused, or something outside rbac.py allowed them)."""
    granted = list(granted)
    return [r for r in requests if not any(g.allows(r) for g in granted)]


def unused(granted: Iterable[Grant], requests: Iterable[Request]) -> list[Grant]:
    """Grants that no request needed (a request counts only when it succeeded)."""
    succeeded = [r for r in requests if r.code is None or r.code < 400]
    return [g for g in granted if not any(g.allows(r) for r in succeeded)]


def refused(requests: Iterable[Request]) -> list[Request]:
    """Requests the apiserver refused as unauthorized (401/403)."""
    return [r for r in requests if r.code in (401, 403)]


def blocking_owner_updates(children: Iterable[Mapping[str, Any]], field_manager: str,
                           plurals: Mapping[str, str]) -> list[Request]:
    """``update <owner>/finalizers`` for each child `field_manager` applied with ``blockOwnerDeletion: true``.

    Setting that flag is authorized by the OwnerReferencesPermissionEnforcement admission plugin (an authorizer
    check on the owner's ``finalizers`` subresource that leaves no audit event of its own); `plurals` maps the
    owner kinds of interest (e.g. AitbcNode) to their resource names.
    """
    out = []
    for child in children:
        meta = child["metadata"]
        if field_manager not in {m.get("manager") for m in meta.get("managedFields") or []}:
            continue
        for ref in meta.get("ownerReferences") or []:
            if ref.get("blockOwnerDeletion") and ref.get("kind") in plurals:
                group = str(ref["apiVersion"]).rpartition("/")[0]
                out.append(Request(group, f"{plurals[ref['kind']]}/finalizers", "update", meta.get("namespace"),
                                   ref["name"], None,
                                   f"{child.get('kind')}/{meta['name']} applied with blockOwnerDeletion"))
    return out
