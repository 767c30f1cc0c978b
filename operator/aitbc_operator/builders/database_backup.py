"""Pure builders of the AitbcDatabase's dump and restore workloads: the backup CronJob, on-demand and restore Jobs.

Every Job runs one POSIX shell script (``DUMP_SCRIPT``) in an image with pg_dump and pg_restore, as the database's own
role: libpq's ``PG*`` variables come from the connection Secret (``secretKeyRef``), never from the admin Secret. It
writes a ``DumpReport`` (models/dump_report.py) as JSON to the termination message. Actions:

- ``dump``: refuses a pg_dump older than the server's major, ``pg_dump --format=custom`` to a hidden partial file,
  renamed to ``<database>-<UTC time>.dump`` (or ``<database>-pre-restore-<UTC time>.dump``), then verified with
  ``pg_restore --list``; after a scheduled or on-demand dump the oldest such dumps beyond ``keep`` are removed;
- ``verify``: the named dump exists, is readable and lists as a custom-format dump;
- ``restore``: the same check, then ``pg_restore --clean --if-exists --no-owner --single-transaction``: all or
  nothing, objects owned by the role the login acts as (the owner role with AlternatingRoles).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ..models.database import AitbcDatabaseSpec
from .common import child_metadata
from .database import CA_MOUNT_PATH, ca_volume

COMPONENT_BACKUP = "backup"
COMPONENT_RESTORE = "restore"
#: Which dump a Job is: scheduled (the CronJob), on-demand (the annotation), pre-restore.
LABEL_TRIGGER = "aitbc.io/dump-trigger"
#: The restore request a restore Job belongs to.
LABEL_RESTORE = "aitbc.io/restore-request"
BACKUP_DIR = "/backup"
#: The uid/gid the dump containers run as (the official postgres image's `postgres` user); the volume is group-owned
#: by it through fsGroup where the volume type supports it.
RUN_AS = 999
#: A dump or restore that takes longer is stopped (and reported as failed).
ACTIVE_DEADLINE = 6 * 3600
#: A missed scheduled run may start this late; later, it is skipped (not caught up).
STARTING_DEADLINE = 600
#: Finished restore and on-demand Jobs are removed by the TTL controller after a day (their result is in status
#: long before).
FINISHED_TTL = 86400
#: CronJob names are at most 52 characters (the controller appends an 11-character suffix to its Jobs' names).
CRONJOB_NAME_MAX = 52
#: Job names are at most 63 characters (they become the value of the job-name label).
JOB_NAME_MAX = 63

DUMP_SCRIPT = r"""set -u
dir=${AITBC_DIR:-/backup}
tmp=${TMPDIR:-/tmp}
out=${AITBC_REPORT:-/dev/termination-log}
clean() { tr '\n\t\r' '   ' | tr -cd '[:print:]' | tr -d '"\\' | cut -c1-400; }
report() { printf '%s' "$1" > "$out" 2>/dev/null; printf '%s\n' "$1"; }
fail() {
  report "$(printf '{"ok":false,"action":"%s","error":"%s"}' "$AITBC_ACTION" "$(printf '%s' "$1" | clean)")"
  exit 1
}
done_ok() {
  report "$(printf '{"ok":true,"action":"%s","file":"%s","sizeBytes":%s,"entries":%s,"removed":%s,"pgDumpMajor":%s}' \
    "$AITBC_ACTION" "$1" "$size" "$entries" "${removed:-0}" "$major")"
}
checked() {
  [ -f "$dir/$1" ] || fail "dump $1 not found in the backup volume"
  [ -r "$dir/$1" ] || fail "dump $1 is not readable"
  pg_restore --list "$dir/$1" > "$tmp/list" 2> "$tmp/err" \
    || fail "dump $1 is not a readable custom-format dump: $(cat "$tmp/err")"
  entries=$(grep -c '^[0-9]' "$tmp/list")
  size=$(wc -c < "$dir/$1" | tr -d ' ')
}
major=$(pg_dump --version | sed -n 's/^pg_dump (PostgreSQL) \([0-9][0-9]*\).*/\1/p')
[ -n "$major" ] || fail "cannot tell the version of pg_dump: $(pg_dump --version 2>&1)"
[ "$major" -ge "$AITBC_SERVER_MAJOR" ] \
  || fail "pg_dump $major is older than the server (PostgreSQL $AITBC_SERVER_MAJOR): use an image of that major"
case "$AITBC_ACTION" in
dump)
  file="$AITBC_PREFIX-$(date -u +%Y%m%dT%H%M%SZ).dump"
  pg_dump --format=custom --file="$dir/.$file.partial" 2> "$tmp/err" \
    || { rm -f "$dir/.$file.partial"; fail "pg_dump: $(cat "$tmp/err")"; }
  mv "$dir/.$file.partial" "$dir/$file" || fail "cannot rename the dump to $file"
  checked "$file"
  removed=0
  if [ "$AITBC_KEEP" -gt 0 ]; then
    for old in $(ls -1 "$dir" | grep -E "^$AITBC_DATABASE-[0-9]{8}T[0-9]{6}Z\.dump\$" | sort -r \
                 | tail -n +$((AITBC_KEEP + 1))); do
      rm -f "$dir/$old" && removed=$((removed + 1))
    done
  fi
  done_ok "$file"
  ;;
verify)
  checked "$AITBC_FILE"
  done_ok "$AITBC_FILE"
  ;;
restore)
  checked "$AITBC_FILE"
  pg_restore --clean --if-exists --no-owner --single-transaction --dbname="$PGDATABASE" "$dir/$AITBC_FILE" \
    2> "$tmp/err" || fail "pg_restore (nothing was changed: one transaction): $(tail -c 300 "$tmp/err")"
  done_ok "$AITBC_FILE"
  ;;
*) fail "unknown action $AITBC_ACTION" ;;
esac
"""


def default_image(server_version: str) -> str:
    """The official postgres image of the server's major, e.g. ``docker.io/library/postgres:15`` for ``15.8``."""
    return f"docker.io/library/postgres:{server_major(server_version)}"


def server_major(server_version: str) -> int:
    """The major of a server version string (``15.8`` -> 15, ``18.1 (Debian ...)`` -> 18)."""
    return int(server_version.split(".")[0].split()[0])


def bounded_name(base: str, suffix: str, limit: int) -> str:
    """``<base>-<suffix>``, or with base cut and a hash of it added, so that it fits ``limit`` characters."""
    name = f"{base}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-.')}-{digest}-{suffix}"


def cron_job_name(resource: str) -> str:
    """The backup CronJob's name: ``<name>-backup``."""
    return bounded_name(resource, "backup", CRONJOB_NAME_MAX)


def on_demand_job_name(resource: str, token: str) -> str:
    """The Job of one on-demand token: fixed by the token, so a lost status write never makes a second dump."""
    return bounded_name(resource, f"backup-{hashlib.sha256(token.encode()).hexdigest()[:8]}", JOB_NAME_MAX)


def restore_job_name(resource: str, request: str, step: str) -> str:
    """The Job of one step (verify, predump, restore) of one restore request."""
    return bounded_name(resource, f"{hashlib.sha256(request.encode()).hexdigest()[:8]}-{step}", JOB_NAME_MAX)


def _env(spec: AitbcDatabaseSpec, secret: str, *, action: str, server_major_: int, prefix: str, keep: int,
         file: str | None, ca: bool) -> list[dict[str, Any]]:
    def from_secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    env = [from_secret("PGHOST", "host"), from_secret("PGPORT", "port"), from_secret("PGDATABASE", "database"),
           from_secret("PGUSER", "username"), from_secret("PGPASSWORD", "password"),
           from_secret("PGSSLMODE", "sslmode"),
           {"name": "PGAPPNAME", "value": f"aitbc-{action}"},
           {"name": "AITBC_ACTION", "value": action},
           {"name": "AITBC_SERVER_MAJOR", "value": str(server_major_)},
           {"name": "AITBC_DATABASE", "value": spec.effective_database_name},
           {"name": "AITBC_PREFIX", "value": prefix},
           {"name": "AITBC_KEEP", "value": str(keep)},
           {"name": "TMPDIR", "value": "/tmp"}]  # noqa: S108 (the pod's own emptyDir)
    if file is not None:
        env.append({"name": "AITBC_FILE", "value": file})
    if ca:
        env.append({"name": "PGSSLROOTCERT", "value": CA_MOUNT_PATH})
    return env


def dump_pod_template(owner: Mapping[str, Any], spec: AitbcDatabaseSpec, *, component: str,
                      labels: Mapping[str, str], image: str, server_version: str, action: str,
                      prefix: str | None = None, keep: int = 0, file: str | None = None,
                      ca: bool = False) -> dict[str, Any]:
    """The pod template of every dump/verify/restore Job: the script, the backup volume, the Secret's credentials."""
    assert spec.backup is not None
    secret = spec.secret_name(owner["metadata"]["name"])
    meta = child_metadata(owner, "unused", component, labels=labels, owned=False)
    meta.pop("name")
    meta.pop("namespace")
    mounts: list[dict[str, Any]] = [{"name": "backup", "mountPath": BACKUP_DIR},
                                    {"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 (an emptyDir)
    volumes: list[dict[str, Any]] = [
        {"name": "backup", "persistentVolumeClaim": {"claimName": spec.backup.claim_name}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if ca:
        mount, volume = ca_volume(secret)
        mounts.append(mount)
        volumes.append(volume)
    container = {
        "name": action,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", DUMP_SCRIPT],
        "env": _env(spec, secret, action=action, server_major_=server_major(server_version),
                    prefix=prefix or spec.effective_database_name, keep=keep, file=file, ca=ca),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    return {
        "metadata": meta,
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": volumes,
        },
    }


def _job_spec(template: dict[str, Any], *, ttl: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"backoffLimit": 0, "activeDeadlineSeconds": ACTIVE_DEADLINE, "template": template}
    if ttl:
        spec["ttlSecondsAfterFinished"] = FINISHED_TTL
    return spec


def backup_cron_job(owner: Mapping[str, Any], spec: AitbcDatabaseSpec, *, image: str, server_version: str,
                    suspend: bool, ca: bool = False) -> dict[str, Any]:
    """The CronJob of the scheduled dumps (UTC, Forbid: never two at once; a missed run is skipped, not caught up)."""
    assert spec.backup is not None
    name = cron_job_name(owner["metadata"]["name"])
    labels = {LABEL_TRIGGER: "scheduled"}
    template = dump_pod_template(owner, spec, component=COMPONENT_BACKUP, labels=labels, image=image,
                                 server_version=server_version, action="dump", keep=spec.backup.keep, ca=ca)
    job_meta = {"labels": template["metadata"]["labels"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": child_metadata(owner, name, COMPONENT_BACKUP, labels=labels),
        "spec": {
            "schedule": spec.backup.schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": STARTING_DEADLINE,
            "suspend": suspend,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": job_meta, "spec": _job_spec(template, ttl=False)},
        },
    }


def on_demand_job(owner: Mapping[str, Any], spec: AitbcDatabaseSpec, token: str, *, image: str,
                  server_version: str, ca: bool = False) -> dict[str, Any]:
    """The Job of an on-demand dump (annotation aitbc.io/backup-now), the same as a scheduled one."""
    assert spec.backup is not None
    labels = {LABEL_TRIGGER: "on-demand"}
    template = dump_pod_template(owner, spec, component=COMPONENT_BACKUP, labels=labels, image=image,
                                 server_version=server_version, action="dump", keep=spec.backup.keep, ca=ca)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(owner, on_demand_job_name(owner["metadata"]["name"], token), COMPONENT_BACKUP,
                                   labels=labels),
        "spec": _job_spec(template, ttl=True),
    }


#: The steps of a restore that run a Job, and the script action of each.
RESTORE_STEPS = {"verify": "verify", "predump": "dump", "restore": "restore"}


def restore_job(owner: Mapping[str, Any], spec: AitbcDatabaseSpec, request: str, step: str, *, file: str,
                image: str, server_version: str, ca: bool = False) -> dict[str, Any]:
    """The Job of one step of a restore request: verify the dump, take the pre-restore dump, or restore."""
    action = RESTORE_STEPS[step]
    labels = {LABEL_RESTORE: request, **({LABEL_TRIGGER: "pre-restore"} if step == "predump" else {})}
    prefix = f"{spec.effective_database_name}-pre-restore" if step == "predump" else None
    template = dump_pod_template(owner, spec, component=COMPONENT_RESTORE, labels=labels, image=image,
                                 server_version=server_version, action=action, prefix=prefix, keep=0,
                                 file=None if step == "predump" else file, ca=ca)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(owner, restore_job_name(owner["metadata"]["name"], request, step),
                                   COMPONENT_RESTORE, labels=labels),
        "spec": _job_spec(template, ttl=True),
    }
