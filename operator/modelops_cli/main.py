"""`modelops` console script."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def _documents(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    if not docs:
        raise SystemExit(f"modelops: {path} holds no YAML documents")
    return docs


def cmd_run(args: argparse.Namespace) -> int:
    """Validate a manifest with the API models and run its Job in-process."""
    from modelops_api import kind_info
    from modelops_api.meta import EXIT_PERMANENT

    docs = _documents(args.file)
    if args.name:
        docs = [d for d in docs if d.get("metadata", {}).get("name") == args.name]
    docs = [d for d in docs if str(d.get("apiVersion", "")).startswith("modelops.dev/")]
    if len(docs) != 1:
        print(
            f"modelops run: expected exactly one modelops resource in {args.file}, found {len(docs)} (use --name)",
            file=sys.stderr,
        )
        return EXIT_PERMANENT
    doc = docs[0]
    try:
        kind_info(str(doc.get("kind")))
    except KeyError as exc:
        print(f"modelops run: {exc}", file=sys.stderr)
        return EXIT_PERMANENT
    from modelops_jobs import runner
    from modelops_jobs.reporting import Reporter, progress_bar_sink

    doc.setdefault("metadata", {}).setdefault("namespace", "local")
    if doc.get("kind") == "ModelAdaptation":
        doc["run"] = {"number": args.run_number, "trigger": "modelops run"}
    reporter = Reporter(progress_bar_sink(sys.stderr), min_interval=0.2)
    outcome = runner.execute(doc, reporter=reporter, install_signals=True)
    print(json.dumps(outcome.result.to_wire(), indent=2))
    return outcome.exit_code


def cmd_crds(args: argparse.Namespace) -> int:
    """Write (or check) the generated CRDs."""
    from modelops_api.crdgen import generate_all

    outputs = [Path(p) for p in (args.out or [str(REPO_ROOT / "crds")])]
    stale: list[str] = []
    for out in outputs:
        for name, text in generate_all().items():
            path = out / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            else:
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {path}")
    if stale:
        print(
            "generated files differ from the models (run `make crds`):\n  " + "\n  ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    """Write (or check) docs/api.md from the models."""
    from modelops_api.apidoc import render_api_reference

    path = Path(args.out or REPO_ROOT / "docs" / "api.md")
    text = render_api_reference()
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} differs from the models (run `make crds`)", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the operator against the current kubeconfig (or in-cluster)."""
    from dataclasses import replace

    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run

    config = OperatorConfig.from_env()
    if args.namespace:
        config = replace(config, namespaces=tuple(args.namespace))
    if args.jobs_image:
        config = replace(config, jobs_image=args.jobs_image)
    if args.metrics_port is not None:
        config = replace(config, metrics_port=args.metrics_port)
    if args.health_port is not None:
        config = replace(config, health_port=args.health_port)
    run(config, args.kubeconfig)
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from modelops_devcluster.cli import cli

    return int(cli(args.cluster_args) or 0)


def cmd_fixtures(args: argparse.Namespace) -> int:
    """Create the tiny models and data the examples and the demo refer to."""
    from modelops_jobs.testing.fixtures import build_example_fixtures

    for path in build_example_fixtures(Path(args.root), force=args.force):
        print(path)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelops", description="Kubernetes operator for the lifecycle of ML models."
    )
    sub = p.add_subparsers(dest="command", required=True)

    op = sub.add_parser("operator", help="run the operator", description=cmd_operator.__doc__)
    op.add_argument(
        "--namespace", "-n", action="append", help="watch only this namespace (repeatable)"
    )
    op.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG)")
    op.add_argument("--jobs-image", help="image of the Job pods")
    op.add_argument("--metrics-port", type=int, help="port of /metrics")
    op.add_argument("--health-port", type=int, help="port of /healthz")
    op.set_defaults(func=cmd_operator)

    run = sub.add_parser(
        "run", help="run a manifest's Job locally, no cluster", description=cmd_run.__doc__
    )
    run.add_argument("-f", "--file", required=True, help="manifest (YAML), or - for stdin")
    run.add_argument("--name", help="which resource, when the file holds several")
    run.add_argument("--run-number", type=int, default=1, help="ModelAdaptation: the run number")
    run.set_defaults(func=cmd_run)

    crds = sub.add_parser(
        "crds", help="generate the CRDs from the API models", description=cmd_crds.__doc__
    )
    crds.add_argument("--out", action="append", help="output directory (repeatable; default crds/)")
    crds.add_argument("--check", action="store_true", help="fail when the files differ")
    crds.set_defaults(func=cmd_crds)

    docs = sub.add_parser(
        "api-docs", help="generate docs/api.md from the API models", description=cmd_docs.__doc__
    )
    docs.add_argument("--out", help="output file (default docs/api.md)")
    docs.add_argument("--check", action="store_true", help="fail when the file differs")
    docs.set_defaults(func=cmd_docs)

    cl = sub.add_parser(
        "cluster", help="local control plane: up | down | kubeconfig", add_help=False
    )
    cl.add_argument(
        "cluster_args",
        nargs=argparse.REMAINDER,
        help="up | down | kubeconfig (see `modelops cluster --help`)",
    )
    cl.set_defaults(func=cmd_cluster)

    fx = sub.add_parser(
        "fixtures",
        help="create the tiny models and data the examples use",
        description=cmd_fixtures.__doc__,
    )
    fx.add_argument(
        "--root", default="/tmp/modelops", help="where to create them (default /tmp/modelops)"
    )
    fx.add_argument("--force", action="store_true", help="rebuild even if present")
    fx.set_defaults(func=cmd_fixtures)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
