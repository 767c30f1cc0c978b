"""The `aitbc-operator` command: run the operator, generate CRDs, prepare chain volumes, print the version."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__


def _default_crd_dir() -> Path:
    """`crds/` of the source checkout this package was installed from (editable install), else ./crds."""
    here = Path(__file__).resolve().parents[2] / "crds"
    return here if here.is_dir() else Path.cwd() / "crds"


def cmd_crds(args: argparse.Namespace) -> int:
    """Write the CRDs, or with --check compare them with the files and print a diff."""
    from .crdgen import render_all

    out_dir: Path = args.output_dir
    stale = 0
    for name, text in render_all().items():
        path = out_dir / name
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(path), f"{path} (generated)")
            )
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"\n{stale} CRD file(s) in {out_dir} are stale: run `make generate`", file=sys.stderr)
        return 1
    if args.check:
        print(f"CRDs in {out_dir} are up to date")
    return 0


def cmd_manifests(args: argparse.Namespace) -> int:
    """Write the generated packaging files (RBAC, chart CRDs, Argo CD health), or with --check print their diff."""
    from .manifests import default_root, stale

    root: Path = args.root or default_root()
    changed = stale(root)
    for rel, (current, generated) in changed.items():
        if args.check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), generated.splitlines(True), str(rel), f"{rel} (generated)"
                )
            )
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(generated)
            print(f"wrote {rel}")
    if args.check and changed:
        print(f"\n{len(changed)} generated file(s) under {root} are stale: run `make generate`", file=sys.stderr)
        return 1
    if args.check:
        print("generated packaging files are up to date")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Start the kopf operator (blocks until stopped). A bad AITBC_* setting is one line on stderr, exit code 2."""
    # kopf imports the official Kubernetes client whenever it is importable (20 MiB resident, for a login handler the
    # operator replaces and type checks of its models): it is in development environments for the tests, never in
    # the image. Made unimportable here, so the operator process is the same everywhere.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    from . import settings
    from .operator import run

    try:
        settings.load()
    except ValueError as exc:
        print(f"aitbc-operator: invalid setting: {exc}", file=sys.stderr)
        return 2
    return run(namespaces=tuple(args.namespace), standalone=args.standalone, verbose=args.verbose)


def cmd_version(_: argparse.Namespace) -> int:
    """Print the version."""
    print(f"aitbc-operator {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from .volume.cli import add_volume_parser

    parser = argparse.ArgumentParser(prog="aitbc-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator (kopf) against the current kubeconfig or in-cluster config")
    run.add_argument(
        "-n", "--namespace", action="append", default=[],
        help="watch only this namespace (repeatable; default: AITBC_WATCH_NAMESPACES, else cluster-wide)",
    )
    run.add_argument(
        "--standalone", action="store_true",
        help="do not coordinate with other replicas (no peering / leader election); for local development",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=cmd_run)

    crds = sub.add_parser("crds", help="write the CRD manifests generated from the models")
    crds.add_argument("--check", action="store_true", help="do not write; exit 1 with a diff when files are stale")
    crds.add_argument("-o", "--output-dir", type=Path, default=_default_crd_dir(), help="directory (default: crds/)")
    crds.set_defaults(func=cmd_crds)

    manifests = sub.add_parser(
        "manifests", help="write the generated packaging files (RBAC for kustomize and Helm, chart CRDs, Argo health)"
    )
    manifests.add_argument("--check", action="store_true", help="do not write; exit 1 with a diff when files are stale")
    manifests.add_argument("--root", type=Path, default=None, help="repository root (default: this checkout)")
    manifests.set_defaults(func=cmd_manifests)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)

    add_volume_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
