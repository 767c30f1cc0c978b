"""What both reconcilers share: spec validation with a readable error, and recording a failure in status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from .. import conditions, errors
from ..builders.common import LABEL_OWNER
from ..k8s import resources as r
from ..k8s.client import Kube, Obj
from ..k8s.resources import Kind
from ..models.base import Condition

SpecT = TypeVar("SpecT", bound=BaseModel)


class _StatusWithConditions(Protocol):
    conditions: list[Condition]
    observed_generation: int | None

    def to_wire(self) -> dict[str, Any]: ...


def validate_spec(model: type[SpecT], body: Mapping[str, Any]) -> SpecT:
    """The validated spec, or InvalidSpec naming each bad field (the CRD should have refused it already)."""
    try:
        return model.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise errors.InvalidSpec(f"invalid spec: {detail}") from None


async def record_failure(
    kube: Kube,
    kind: Kind,
    body: Mapping[str, Any],
    status: _StatusWithConditions,
    exc: errors.OperatorError,
    *,
    now: datetime,
    message: str | None = None,
    observe_generation: bool = True,
) -> None:
    """Ready=False and Degraded=True with the error's reason (Progressing while a temporary error is retried).

    The status object is updated in place and written only if it changed (a repeated failure writes nothing).
    """
    generation = body["metadata"].get("generation")
    status.conditions = conditions.summary(
        status.conditions, ready=False, progressing=isinstance(exc, errors.TemporaryError), degraded=True,
        reason=exc.reason, message=message or exc.message, now=now, generation=generation,
    )
    if observe_generation:
        status.observed_generation = generation
    await kube.patch_status(kind, body, status.to_wire())


#: The label the Job controller puts on a Job's pods.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


async def job_pods(kube: Kube, namespace: str, job: Mapping[str, Any]) -> list[Obj]:
    """The pods of one of the operator's Jobs: selected by the owner label their template carries as well as the
    Job's name, so the list is bounded like every other the operator makes."""
    meta = job["metadata"]
    owner = (meta.get("labels") or {}).get(LABEL_OWNER, "")
    return await kube.list(r.POD, namespace, label_selector=f"{LABEL_OWNER}={owner},{JOB_NAME_LABEL}={meta['name']}")
