"""The images the real node runs, built on this machine without a Docker engine or a registry.

- ``localhost/aitbc/pause:3.10``: the pod sandbox, Kubernetes' own ``build/pause/linux/pause.c`` (from the Go module
  cache, the pinned k8s.io/kubernetes version) compiled with ``gcc -static`` into an image ``FROM scratch``;
- ``localhost/aitbc/python-base:bookworm``: Debian bookworm with python3, made by ``mmdebstrap`` from Debian's
  packages and imported with podman (the official ``python:*-slim`` image needs a registry);
- ``aitbc-operator:dev``: the project's own ``Dockerfile``, built by buildah with ``PYTHON_IMAGE`` pointing at that
  base (the Dockerfile keeps its ARG, so the official base still works for real users);
- ``aitbc-standin:dev``: the stand-in AITBC node/RPC (``localcluster/standin``, its own Dockerfile);
- ``aitbc-pgtools:dev``: Debian's postgresql-client-15 on that base (``localcluster/pgtools``), the pg_dump image of
  the AitbcDatabase backup tests (users get an official ``postgres:<major>`` image by default).

Each image is exported as an OCI archive under ``<cache>/images/`` with a key file: the sha256 of everything that goes
into it (sources, Dockerfile, the base's key, the build arguments). A build whose key is unchanged is skipped, so a
second ``make demo`` or test run builds nothing. Builds use host networking and the host's CA bundle: this machine's
egress goes through a TLS-intercepting proxy that only the host's bundle trusts. podman/buildah get explicit ulimits
(there is no CAP_SYS_RESOURCE here to raise them) and a storage of their own under the cache.

    python -m localcluster.images build      # all five (cached)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cluster import REPO_ROOT, ClusterError, k8s_version

PAUSE = "localhost/aitbc/pause:3.10"
BASE = "localhost/aitbc/python-base:bookworm"
OPERATOR = "docker.io/library/aitbc-operator:dev"  # `aitbc-operator:dev`, the name the kind overlay runs
STANDIN = "docker.io/library/aitbc-standin:dev"
#: pg_dump/pg_restore 15 for the AitbcDatabase backup Jobs of the end-to-end tests (their spec.backup.image).
PGTOOLS = "docker.io/library/aitbc-pgtools:dev"
#: What the base image holds: python3 with venv, CA certificates, time zones (backup schedules name one).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "tzdata")
_DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
#: podman/buildah cannot raise limits here (no CAP_SYS_RESOURCE): give the containers fixed ones.
#: Archives kept per image (the newest): enough for a few checkouts of the project sharing the cache.
KEEP_ARCHIVES = 4
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/aitbc-operator``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aitbc-operator"


def say(message: str) -> None:
    """Progress on stderr."""
    print(f"[images] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Image:
    """A built image: its reference and the OCI archive holding it."""

    ref: str
    archive: Path


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def tree_files(root: Path, include: Iterable[str]) -> list[Path]:
    """The files of a build context (what .dockerignore lets in), sorted, caches left out."""
    found: list[Path] = []
    for entry in include:
        path = root / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found += [p for p in candidates if "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".egg-info"))
                  and ".egg-info" not in str(p)]
    return found


def context_key(root: Path, include: Iterable[str], *extra: str) -> str:
    """The key of a build: relative paths and contents of the context files, plus extra strings."""
    files = tree_files(root, include)
    return _digest([*(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() for p in files),
                    *(e.encode() for e in extra)])


class Builder:
    """Builds the images into ``<cache>/images`` (skipping those whose key is unchanged)."""

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = (cache or cache_root()) / "images"
        self.store = (cache or cache_root()) / "containers"

    # --- plumbing ------------------------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment for podman/buildah: our own containers.conf and storage (nothing of the host's changed)."""
        self.store.mkdir(parents=True, exist_ok=True)
        conf, storage = self.store / "containers.conf", self.store / "storage.conf"
        conf.write_text(CONTAINERS_CONF)
        storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{self.store / "storage"}"\n'
                           f'runroot = "{self.store / "run"}"\n')
        return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}

    def run(self, *argv: str | Path, cwd: Path | None = None) -> str:
        """Run a build command; a failure raises ClusterError with the tail of its output."""
        result = subprocess.run([str(a) for a in argv], cwd=cwd, env=self.env(), capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise ClusterError(f"{Path(str(argv[0])).name} failed ({result.returncode}):\n{tail}")
        return result.stdout

    def archive(self, name: str, key: str) -> Path:
        """Where the archive of ``name`` built with ``key`` lives (several checkouts of the project can share the
        cache: each build has its own file, the newest few are kept)."""
        return self.cache / f"{name}-{key[:16]}.tar"

    def cached(self, name: str, key: str) -> Image | None:
        """The archive of ``name`` if it was built with ``key``."""
        archive = self.archive(name, key)
        if archive.exists():
            os.utime(archive)  # recently used: kept by the pruning below
            return Image(archive_ref(archive), archive)
        return None

    def export(self, name: str, ref: str, key: str) -> Image:
        """Save the image as an OCI archive (written aside, then renamed: never half-written) and prune old ones."""
        self.cache.mkdir(parents=True, exist_ok=True)
        archive = self.archive(name, key)
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        self.run("podman", "save", "--format", "oci-archive", "-o", partial, ref)
        partial.rename(archive)
        old = sorted(self.cache.glob(f"{name}-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[KEEP_ARCHIVES:]:
            stale.unlink(missing_ok=True)
        return Image(ref, archive)

    # --- the images ----------------------------------------------------------------------------------------------

    def pause(self) -> Image:
        """Kubernetes' pause.c, statically linked, in an image of its own."""
        source = pause_source()
        gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True).stdout
        key = _digest([source.read_bytes(), gcc.encode()])
        if (hit := self.cached("pause", key)) is not None:
            return hit
        say(f"pause: compiling {source}")
        work = self.cache / "pause-build"
        work.mkdir(parents=True, exist_ok=True)
        binary = work / "pause"
        self.run("gcc", "-Os", "-static", "-DVERSION=3.10", "-o", binary, source)
        container = self.run("buildah", "from", "scratch").strip()
        try:
            self.run("buildah", "copy", container, binary, "/pause")
            self.run("buildah", "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container)
            self.run("buildah", "commit", "--quiet", container, PAUSE)
        finally:
            self.run("buildah", "rm", container)
        return self.export("pause", PAUSE, key)

    def base(self) -> str:
        """The Debian + python3 base (mmdebstrap, imported with podman); returns its key."""
        args = ["--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                *(f"--dpkgopt=path-exclude={p}" for p in _DPKG_EXCLUDES), "bookworm"]
        key = _digest(a.encode() for a in args)
        stamp = self.cache / "python-base.key"
        if stamp.exists() and stamp.read_text() == key and self._has(BASE):
            return key
        self.cache.mkdir(parents=True, exist_ok=True)
        tar = self.cache / "python-base.rootfs.tar"
        say("base: mmdebstrap of Debian bookworm with python3 (about a minute)")
        self.run("mmdebstrap", "--quiet", *args, tar, "http://deb.debian.org/debian")
        self.run("podman", "import", "--change", 'CMD ["python3"]', tar, BASE)
        tar.unlink()
        stamp.write_text(key)
        return key

    def dockerfile_image(self, name: str, ref: str, context: Path, include: Iterable[str], base_key: str) -> Image:
        """``buildah bud`` of ``context/Dockerfile`` on the local base."""
        include = (*include, "Dockerfile")
        key = context_key(context, include, base_key, ref)
        if (hit := self.cached(name, key)) is not None:
            return hit
        say(f"{name}: buildah bud {context / 'Dockerfile'}")
        self.run("buildah", "bud", "--quiet", "--layers", "--network=host", "--volume=/etc/ssl/certs:/etc/ssl/certs:ro",
                 f"--build-arg=PYTHON_IMAGE={BASE}", "--tag", ref, "--file", context / "Dockerfile", context)
        return self.export(name, ref, key)

    def _has(self, ref: str) -> bool:
        result = subprocess.run(["podman", "image", "exists", ref], env=self.env(), capture_output=True)
        return result.returncode == 0

    def all(self) -> list[Image]:
        """Every image the real node needs: pause, operator, stand-in, pg tools (one build at a time here)."""
        for tool in ("gcc", "mmdebstrap", "podman", "buildah"):
            if shutil.which(tool) is None:
                raise ClusterError(f"{tool} not found: `make system-deps` installs the Debian packages")
        self.cache.mkdir(parents=True, exist_ok=True)
        with (self.cache / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._all()

    def _all(self) -> list[Image]:
        base_key = self.base()
        operator = self.dockerfile_image(
            "aitbc-operator", OPERATOR, REPO_ROOT, ("pyproject.toml", "README.md", "operator", ".dockerignore"),
            base_key)
        standin = self.dockerfile_image(
            "aitbc-standin", STANDIN, REPO_ROOT / "localcluster" / "standin",
            [p.name for p in (REPO_ROOT / "localcluster" / "standin").glob("*.py")], base_key)
        pgtools = self.dockerfile_image("aitbc-pgtools", PGTOOLS, REPO_ROOT / "localcluster" / "pgtools", (), base_key)
        return [self.pause(), operator, standin, pgtools]


def pause_source() -> Path:
    """``build/pause/linux/pause.c`` of the pinned k8s.io/kubernetes module (downloaded into the module cache)."""
    out = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{k8s_version()}"],
                         capture_output=True, text=True, cwd=cache_root())
    if out.returncode != 0:
        raise ClusterError(f"go mod download k8s.io/kubernetes@{k8s_version()} failed: {out.stderr.strip()}")
    source = Path(json.loads(out.stdout)["Dir"]) / "build" / "pause" / "linux" / "pause.c"
    if not source.exists():
        raise ClusterError(f"{source} not found in the module cache")
    return source


def archive_ref(archive: Path) -> str:
    """The image reference recorded in an OCI archive's index.json."""
    return str(archive_index(archive)["annotations"]["org.opencontainers.image.ref.name"])


def archive_digest(archive: Path) -> str:
    """The manifest digest recorded in an OCI archive's index.json (what containerd lists for the image)."""
    return str(archive_index(archive)["digest"])


def archive_image_id(archive: Path) -> str:
    """The image ID (config digest) of an OCI archive's image: what the kubelet reports as a container's imageID."""
    manifest_digest = archive_digest(archive).split(":", 1)[1]
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"blobs/sha256/{manifest_digest}")
        if member is None:
            raise ClusterError(f"{archive} lacks its manifest blob")
        return str(json.loads(member.read())["config"]["digest"])


def archive_index(archive: Path) -> Mapping[str, Any]:
    """The one manifest entry of an OCI archive's index.json (reference and digest)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ClusterError(f"{archive} has no index.json")
        manifests = json.loads(member.read())["manifests"]
    return dict(manifests[0])


def main(argv: list[str] | None = None) -> int:
    """``python -m localcluster.images build``: build (or find cached) every image and print the archives."""
    parser = argparse.ArgumentParser(prog="python -m localcluster.images", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build"])
    parser.parse_args(argv)
    for image in Builder().all():
        print(f"{image.ref}\t{image.archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
