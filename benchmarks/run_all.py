"""`make bench`: run every benchmark and record what each printed in benchmarks/RESULTS.md.

bench_ingest and bench_live write their own tables; the others' printed figures are recorded
verbatim under their command, with the date and machine. Run on a quiet machine: the figures are medians of
several runs inside each benchmark, but the machine is shared.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from results import stamp, write_section

HERE = Path(__file__).resolve().parent
BENCHES = [
    (
        "bench_analytics",
        ["bench_analytics.py"],
        "Analytics queries at 10 million events: ours vs direct DuckDB SQL",
    ),
    (
        "bench_predictions",
        ["bench_predictions.py"],
        "Per-user predictions from loaded models, real server",
    ),
    (
        "bench_telemetry",
        ["bench_telemetry.py", "--rounds", "3"],
        "Telemetry ingest, real server, durable",
    ),
    ("bench_export", ["bench_export.py", "--no-write"], "Export of 10 million rows: peak RSS"),
    (
        "bench_experiments",
        ["bench_experiments.py", "--no-write"],
        "Experiment results at 10 million events",
    ),
    (
        "bench_alerts",
        ["bench_alerts.py"],
        "Alert rule evaluation at 10 million events and 1 million readings",
    ),
]


def main() -> None:
    only = set(sys.argv[1:])  # e.g. `python benchmarks/run_all.py bench_analytics`
    for own in ("bench_ingest", "bench_live"):  # these write their own sections
        if not only or own in only:
            subprocess.run([sys.executable, str(HERE / f"{own}.py")], check=True)
    for name, args, title in BENCHES:
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        done = subprocess.run(
            [sys.executable, str(HERE / args[0]), *args[1:]], capture_output=True, text=True
        )
        print(done.stdout[-4000:], done.stderr[-2000:] if done.returncode else "", flush=True)
        status = "" if done.returncode == 0 else f"\n**exit code {done.returncode}**\n"
        body = (
            f"## {title} (`python benchmarks/{' '.join(args)}`)\n\n{stamp()}\n{status}\n```\n"
            f"{done.stdout.strip()}\n```"
        )
        write_section(name, body)


if __name__ == "__main__":
    main()
