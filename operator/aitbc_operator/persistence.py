"""What kopf keeps on the objects it handles (its ``settings.persistence``): the diff-base and the handlers' progress.

kopf writes to an object of its own accord after the handlers of a change succeeded: the diff-base (the last handled
spec, labels and annotations, to tell a creation, an update and a no-op event apart) and, the first time, a marker
annotation (``<prefix>/kopf-managed``). Each is a PATCH and one more watch event for kopf to parse. Both are avoided
here for AitbcDatabases, whose creation then costs kopf one write (its finalizer) and an update none:

- The diff-base of an AitbcDatabase is its ``status.observedGeneration``. What an AitbcDatabase produces depends on
  its spec alone (its annotations are read where they act: rotation and backup requests by an event filter, the
  deletion policy at deletion), and its reconcile records the ``metadata.generation`` it converged in
  ``status.observedGeneration``, on success and on failure alike: none yet is a creation, an older one an update, the
  current one nothing to do. AitbcNodes keep kopf's annotation: their labels and annotations are inherited by their
  children, and a change of those bumps no generation.
- No marker. It lets *another* kopf-based operator that handles the same objects leave this one's annotations out of
  its own diff-base; nothing else handles these kinds, and the progress annotations it would guard exist only while
  a handler is retried by kopf (the handlers retry on their own, handlers/database.py). This operator's own diff
  leaves every ``aitbc.io/`` annotation out anyway (kopf's progress storage clears its prefix from the essence).
"""

from __future__ import annotations

from collections.abc import Iterable

import kopf

#: The prefix of every annotation kopf keeps on the objects, and the key of the diff-base annotation (AitbcNodes).
PREFIX = "aitbc.io"
DIFFBASE_KEY = "last-handled-configuration"


def _essence(generation: object) -> kopf.BodyEssence:
    """The whole essence of a kind with an observed generation: kopf's diff sees nothing else."""
    return kopf.BodyEssence(status={"observedGeneration": generation})


class ObservedGenerationDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, except for the kinds in ``kinds``: for those the essence is the generation, the
    stored one is ``status.observedGeneration``, and nothing is ever written."""

    def __init__(self, kinds: Iterable[str]) -> None:
        super().__init__(prefix=PREFIX, key=DIFFBASE_KEY)
        self._kinds = frozenset(kinds)

    def _by_generation(self, body: kopf.Body) -> bool:
        return body.get("kind") in self._kinds

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        if not self._by_generation(body):
            return super().build(body=body, extra_fields=extra_fields)
        return _essence(body.get("metadata", {}).get("generation"))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if not self._by_generation(body):
            return super().fetch(body=body)
        observed = (body.get("status") or {}).get("observedGeneration")
        return None if observed is None else _essence(observed)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if not self._by_generation(body):
            super().store(body=body, patch=patch, essence=essence)


class UnmarkedProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's progress annotations, without the ``kopf-managed`` marker (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__(prefix=PREFIX)

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        """Nothing: the marker would be the only content of a PATCH after every object's first handled change."""
