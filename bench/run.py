"""`make bench`: Conveyor and the baseline measured side by side in one run; writes results and the table."""
import argparse
import os
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Measure Conveyor against what a Django team would run instead (bare and confirmed "
        "`delay()` views, Celery workers with results off or in PostgreSQL, threads and prefork pools) on this "
        "machine, alternating the sides so machine noise hits each, and write bench/results/latest.{json,md}.",
    )
    sizes = parser.add_argument_group("sizes (defaults keep a run under 5 minutes on 2 cores)")
    sizes.add_argument("--rounds", type=int, default=3,
                       help="alternating rounds of each throughput measurement (default 3)")
    sizes.add_argument("--submit-seconds", type=float, default=5,
                       help="seconds of load per submit round and side (default 5)")
    sizes.add_argument("--warmup-seconds", type=float, default=2,
                       help="seconds of unrecorded load per web before the rounds (default 2)")
    sizes.add_argument("--connections", type=int, default=8,
                       help="concurrent keep-alive connections of the load generator; the web serves "
                       "2 workers x 4 threads (default 8)")
    sizes.add_argument("--jobs", type=int, default=2000,
                       help="no-op jobs queued then drained per end-to-end round and side (default 2000)")
    sizes.add_argument("--webhook-jobs", type=int, default=160,
                       help="webhook deliveries queued then drained per real-work round and side, to a receiver "
                       "answering after 100 ms (default 160: five waves of the stock threads worker's 32)")
    sizes.add_argument("--webhook-fast-jobs", type=int, default=320,
                       help="the same to a receiver answering after 10 ms (default 320)")
    sizes.add_argument("--latency-samples", type=int, default=1000,
                       help="jobs submitted one at a time for the idle 202-to-start latency (default 1000)")
    sizes.add_argument("--latency-gap-ms", type=float, default=10,
                       help="pause between idle latency samples so the system is idle at each (default 10)")
    sizes.add_argument("--loaded-latency-seconds", type=float, default=5,
                       help="seconds of steady submissions, at half the measured end-to-end throughput, for the "
                       "202-to-start latency under load (default 5)")
    backlog = parser.add_argument_group("backlog test")
    backlog.add_argument("--large", action="store_true", help="also run the backlog test (long)")
    backlog.add_argument("--backlog-jobs", type=int, default=1_000_000,
                         help="no-op jobs queued for the backlog test (default 1,000,000)")
    backlog.add_argument("--backlog-retrying", type=int, default=10_000,
                         help="jobs waiting in retry backoff during the backlog test (default 10,000)")
    backlog.add_argument("--backlog-wait", type=int, default=120,
                         help="longest retry wait in seconds; waits spread over its second half (default 120)")
    backlog.add_argument("--page-samples", type=int, default=200,
                         help="idle samples of the job list page, empty and with the backlog recorded (default 200)")
    run = parser.add_argument_group("run")
    run.add_argument("--smoke", action="store_true",
                     help="tiny sizes that finish in seconds, for CI; the figures mean nothing")
    run.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto",
                     help="wrk when installed (auto), or the threaded Python generator")
    run.add_argument("--profile", action="store_true",
                     help="sample Conveyor's web and worker with py-spy (must be on PATH) into artifacts/bench/; "
                     "sampling slows them, so the figures of a profiled run are not comparable")
    run.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/conveyor_bench",
                     help="the benchmark's own database, created when missing (default %(default)s)")
    run.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672//",
                     help="RabbitMQ (default %(default)s)")
    run.add_argument("--queue-prefix", default="bench-",
                     help="prefix of every queue the benchmark declares, deletes and fills (default %(default)s)")
    run.add_argument("--output", type=Path, default=ROOT / "bench" / "results",
                     help="where latest.json and latest.md go (default bench/results); process logs go to "
                     "artifacts/bench/")
    run.add_argument("--no-readme", action="store_true", help="leave README.md's table as it is")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.submit_seconds, args.warmup_seconds, args.connections = 1, 1, 1, 4
        args.jobs, args.latency_samples, args.latency_gap_ms = 50, 20, 5
        args.webhook_jobs, args.webhook_fast_jobs, args.loaded_latency_seconds = 20, 40, 1
        args.backlog_jobs, args.backlog_retrying, args.backlog_wait, args.page_samples = 200, 10, 2, 10
    return args


def conveyor_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of Conveyor's processes: production settings on the benchmark's database and queues."""
    queue_max = max(100_000, args.backlog_jobs + args.backlog_retrying + 1000) if args.large else 100_000
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "bench-only-not-secret-" + "0" * 48,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": args.database_url,
        "CELERY_BROKER_URL": args.broker_url,
        "CONVEYOR_QUEUE_PREFIX": args.queue_prefix,
        "CONVEYOR_QUEUE_MAX_LENGTH": str(queue_max),
        # One user submits the whole benchmark, hundreds a second with thousands waiting: a rate no run reaches, so
        # each submission still pays for the limit's check (apps/jobs/limits.py), and no limit on waiting jobs.
        "CONVEYOR_USER_SUBMISSIONS_PER_MINUTE": "1000000",
        "CONVEYOR_USER_JOBS_WAITING_MAX": "0",
        # The real work's receiver listens on loopback, which webhooks may not reach unless allowed.
        "CONVEYOR_WEBHOOK_ALLOWED_PRIVATE": "127.0.0.0/8",
        # Procfile lines say `python` and `celery`: this interpreter's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = conveyor_env(args)
    # The harness reads and writes the benchmark's database as Conveyor does.
    os.environ.update(env)
    django.setup()
    from bench.measure import benchmark_run

    benchmark_run(args, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
