"""What kopf compares an object with to tell a creation, an update and a no-op event apart (its "diff-base").

kopf's default keeps the last handled spec, labels and annotations in an annotation, written by a PATCH after every
handled change: for an AitbcDatabase that is one more write per creation or update, and one more watch event that
every replica of kopf parses and diffs. An AitbcDatabase needs none of it: what it produces depends on its spec
alone (its metadata's annotations are read where they act - rotation and backup requests by an event filter,
deletion policy at deletion), and its reconcile records the spec's ``metadata.generation`` it converged in
``status.observedGeneration`` (on success and on failure alike). That pair is the diff-base: no observed generation
yet is a creation, an older one an update, the current one nothing to do. AitbcNodes keep kopf's annotation: their
labels and annotations are inherited by their children, and a change of those bumps no generation.
"""

from __future__ import annotations

from collections.abc import Iterable

import kopf


def _essence(generation: object) -> kopf.BodyEssence:
    """The whole essence of a kind with an observed generation: kopf's diff sees nothing else."""
    return kopf.BodyEssence(status={"observedGeneration": generation})


class ObservedGenerationDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, except for the kinds in ``kinds``: for those the essence is the generation, the
    stored one is ``status.observedGeneration``, and nothing is ever written."""

    def __init__(self, kinds: Iterable[str], *, prefix: str, key: str) -> None:
        super().__init__(prefix=prefix, key=key)
        self._kinds = frozenset(kinds)

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        if body.get("kind") not in self._kinds:
            return super().build(body=body, extra_fields=extra_fields)
        return _essence(body.get("metadata", {}).get("generation"))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") not in self._kinds:
            return super().fetch(body=body)
        observed = (body.get("status") or {}).get("observedGeneration")
        return None if observed is None else _essence(observed)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") not in self._kinds:
            super().store(body=body, patch=patch, essence=essence)
