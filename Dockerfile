# syntax=docker/dockerfile:1
# The aitbc-operator image: the operator (`aitbc-operator run`, the default) and the chain-volume init container
# (`aitbc-operator volume prepare`, run as root by the pod's securityContext). The volume tool needs nothing beyond
# Python: NOCOW is set with ioctls from Python and SQLite is Python's stdlib sqlite3, so the final image installs no
# Debian packages at all.
#
#   docker build -t ghcr.io/aitbc/aitbc-operator:0.1.0 .
#
# Pinned base: an exact Python patch release on an exact Debian release. To pin by digest as well, use
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtualenv with the package and its dependencies (all from wheels, no compiler needed) --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN /opt/venv/bin/pip install --only-binary=:all: --no-binary=aitbc-operator . \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- final: the base image plus the virtualenv; non-root by default ----------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="aitbc-operator" \
      org.opencontainers.image.description="Kubernetes operator for AITBC databases, chain volumes and node/RPC rollouts" \
      org.opencontainers.image.source="https://github.com/aitbc/aitbc-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# HOME: the uid has no passwd entry, so nothing may need one to find a home directory (/tmp is the pod's emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# A fixed numeric uid/gid (65532, "nonroot" by convention), so Kubernetes can verify runAsNonRoot.
USER 65532:65532
# kopf's liveness endpoint (/healthz) and the Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["aitbc-operator"]
CMD ["run"]
