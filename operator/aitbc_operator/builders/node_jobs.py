"""The AitbcNode's day-2 Jobs (backup, restore, maintenance) and the backup volume claim: pure builders.

Every Job runs one command of the operator's own image (`aitbc-operator volume backup|restore|maintain`) on the
Kubernetes node the node pod runs on (chosen by the decider and stored in status: a restore runs there while the node
pod is gone), with the chain volume mounted, and the backup claim where the copies live. The container runs as root
with only the capabilities of the volume-preparation init container (it reads and writes files the node owns and
gives a restored file back to the data owner), or privileged where ``volumePrep.privileged`` says so. Its report is
the termination message. ``backoffLimit: 0`` (a failed run is reported, the next slot tries again),
``activeDeadlineSeconds`` from the request, ``ttlSecondsAfterFinished`` a day (the result is read within seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..models.node import AitbcNodeSpec
from .node_config import child_meta, names_of
from .node_workloads import (
    INIT_RESOURCES,
    VOLUME_NAME,
    chain_volume,
    host_affinity_to,
    init_security_context,
    placement,
    pod_labels,
)

COMPONENT_BACKUP = "backup"
COMPONENT_RESTORE = "restore"
COMPONENT_MAINTENANCE = "maintenance"
COMPONENT_BACKUPS_VOLUME = "backups"
LABEL_TRIGGER = "aitbc.io/trigger"
JOB_CONTAINER = "volume"
BACKUPS_VOLUME = "backups"
BACKUPS_MOUNT = "/backups"
JOB_TTL_SECONDS = 86400
_COMPONENTS = {"backup": COMPONENT_BACKUP, "restore-check": COMPONENT_RESTORE, "restore": COMPONENT_RESTORE,
               "maintain": COMPONENT_MAINTENANCE}
#: Every component a day-2 Job carries (the reconciler lists the Jobs by these).
JOB_COMPONENTS = (COMPONENT_BACKUP, COMPONENT_RESTORE, COMPONENT_MAINTENANCE)
JobKind = Literal["backup", "restore-check", "restore", "maintain"]


@dataclass(frozen=True)
class JobRequest:
    """A Job the day-2 decider (chainops.py) asks for; :func:`day2_job` makes its manifest."""

    name: str
    kind: JobKind
    node_name: str
    """The Kubernetes node to run on."""
    stamp: datetime
    """Backups: the time in the copies' names."""
    deadline: int
    """activeDeadlineSeconds."""
    chain: str | None = None
    backup: str | None = None
    trigger: str | None = None


def backups_on_own_volume(spec: AitbcNodeSpec) -> bool:
    """Whether the copies live on the backup claim (else in the chain volume's backups/)."""
    return spec.backup is not None and spec.backup.destination == "Volume"


def backup_pvc(owner: Mapping[str, Any], spec: AitbcNodeSpec) -> dict[str, Any] | None:
    """``<name>-backups``: the backup volume claim, or None when the copies go to the chain volume.

    Never owned by the AitbcNode (garbage collection must not take the backups with it); the labels name the owner,
    so a re-created AitbcNode of the same name finds its backups again.
    """
    if not backups_on_own_volume(spec):
        return None
    assert spec.backup is not None
    meta = child_meta(owner, names_of(owner).backup_pvc, COMPONENT_BACKUPS_VOLUME, owned=False)
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                             "resources": {"requests": {"storage": str(spec.backup.volume.size)}}}
    if spec.backup.volume.storage_class_name:
        claim["storageClassName"] = spec.backup.volume.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": claim}


def _args(spec: AitbcNodeSpec, request: JobRequest) -> list[str]:
    if request.kind == "backup":
        keep = spec.backup.keep if spec.backup else None
        args = ["backup", f"--time={request.stamp.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                f"--keep={keep.count if keep else 7}", "--verify" if not spec.backup or spec.backup.verify else
                "--no-verify"]
        if keep is not None and keep.max_age:
            args.append(f"--max-age={keep.max_age}")
        return args
    if request.kind in ("restore", "restore-check"):
        assert request.chain is not None
        assert request.backup is not None
        args = ["restore", f"--chains={request.chain}", f"--backup={request.backup}"]
        return [*args, "--check-only"] if request.kind == "restore-check" else args
    maint = spec.maintenance
    assert maint is not None
    return ["maintain", "--checkpoint" if maint.checkpoint else "--no-checkpoint",
            "--vacuum" if maint.vacuum else "--no-vacuum", f"--integrity-check={maint.integrity_check}"]


def _env(spec: AitbcNodeSpec) -> list[dict[str, str]]:
    env = {"AITBC_DATA_DIR": spec.data_dir, "AITBC_CHAINS": ",".join(spec.chains),
           "AITBC_UID": str(spec.volume_prep.run_as_user), "AITBC_GID": str(spec.volume_prep.run_as_group)}
    if backups_on_own_volume(spec):
        env["AITBC_BACKUP_DIR"] = BACKUPS_MOUNT
    return [{"name": k, "value": v} for k, v in env.items()]


def day2_job(owner: Mapping[str, Any], spec: AitbcNodeSpec, request: JobRequest, *,
             operator_image: str) -> dict[str, Any]:
    """The Job for one request of the decider (chainops.JobRequest)."""
    names = names_of(owner)
    component = _COMPONENTS[request.kind]
    mounts = [{"name": VOLUME_NAME, "mountPath": spec.data_dir}]
    volumes = [chain_volume(owner, spec)]
    if backups_on_own_volume(spec):
        mounts.append({"name": BACKUPS_VOLUME, "mountPath": BACKUPS_MOUNT})
        volumes.append({"name": BACKUPS_VOLUME, "persistentVolumeClaim": {"claimName": names.backup_pvc}})
    container = {
        "name": JOB_CONTAINER,
        "image": spec.volume_prep.image or operator_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["aitbc-operator", "volume", *_args(spec, request)],
        "env": _env(spec),
        "resources": INIT_RESOURCES,
        "securityContext": init_security_context(spec.volume_prep.privileged),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "affinity": {"nodeAffinity": host_affinity_to(request.node_name)},
        **placement(spec),
        "containers": [container],
        "volumes": volumes,
    }
    meta = child_meta(owner, request.name, component)
    if request.trigger:
        meta["labels"][LABEL_TRIGGER] = request.trigger
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, request.deadline),
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": pod_labels(names.owner, component)}, "spec": pod_spec},
        },
    }
