"""`python -m modelops_jobs --spec /etc/modelops/spec.json`: the Job container's command."""

import argparse
import json
import os
import sys
from pathlib import Path

from modelops_api.meta import EXIT_PERMANENT, SPEC_FILE_NAME, SPEC_MOUNT_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelops_jobs",
        description="Run one modelops algorithm from a spec document (the Job pod's entry point).",
    )
    parser.add_argument(
        "--spec", default=f"{SPEC_MOUNT_DIR}/{SPEC_FILE_NAME}", help="spec document (JSON)"
    )
    parser.add_argument("--termination-log", default=None, help="where to write the result JSON")
    parser.add_argument("--checkpoint-dir", default=None, help="resumable checkpoint directory")
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="serve training metrics on this port"
    )
    args = parser.parse_args(argv)

    from modelops_jobs import runner
    from modelops_jobs.reporting import Reporter, json_lines_sink

    try:
        document = json.loads(Path(args.spec).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        from modelops_api.status import JobResult

        result = JobResult(
            ok=False, reason="InvalidSpec", message=f"cannot read {args.spec}: {exc}"
        )
        runner.write_termination_message(result, args.termination_log)
        return EXIT_PERMANENT
    main_rank = int(os.environ.get("RANK") or 0) == 0  # set by torchrun for each worker
    sinks = [json_lines_sink(sys.stderr)] if main_rank else []
    reporter = Reporter(*sinks, min_interval=1.0)
    if args.metrics_port and main_rank:
        from modelops_jobs.training_metrics import serve_training_metrics

        reporter.add_sink(serve_training_metrics(args.metrics_port, document))
    outcome = runner.execute(
        document,
        reporter=reporter,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        install_signals=True,
    )
    if outcome.rank == 0:  # the pod's termination message is rank 0's
        runner.write_termination_message(outcome.result, args.termination_log)
    print(json.dumps({"rank": outcome.rank, **outcome.result.to_wire()}), file=sys.stderr)
    return outcome.exit_code


def leave(code: int) -> None:
    """Exit with `code` now, without interpreter finalization.

    By the time `main` returns, the result is written (termination message, stderr,
    output). Finalization can only turn that into a failure: with gloo, its C++ threads
    may abort the process as the interpreter tears down ("terminate called without an
    active exception", SIGABRT), and the pod would fail and retry finished work."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
