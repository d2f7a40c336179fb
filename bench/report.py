"""The benchmark's output: the machine it ran on, results/latest.json, the Markdown table and README's copy."""
import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def machine_describe(*, postgres: str, rabbitmq: str, load_generator: str) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")), "")
    mem_kb = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal:")), 0)
    os_name = next((line.split("=", 1)[1].strip('"') for line in _lines("/etc/os-release")
                    if line.startswith("PRETTY_NAME=")), platform.system())
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "os": os_name,
        "python": platform.python_version(),
        "packages": {name: version(name) for name in
                     ("Django", "celery", "kombu", "django-celery-results", "gunicorn", "psycopg2-binary")},
        "postgresql": postgres,
        "rabbitmq": rabbitmq,
        "load_generator": load_generator,
        "load_average_start": os.getloadavg()[0],
    }


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def results_write(results: dict[str, Any], *, output: Path) -> tuple[Path, Path]:
    """Write latest.json and latest.md under `output`; their paths."""
    output.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output / "latest.json", output / "latest.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def readme_update(readme: Path, table: str) -> None:
    """Put `table` between the benchmark markers of README (adding a Benchmark section when missing)."""
    block = f"{README_START}\n{table.rstrip()}\n{README_END}"
    text = readme.read_text() if readme.exists() else ""
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        text = head + block + rest.split(README_END, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text else "") + f"## Benchmark\n\n{block}\n"
    readme.write_text(text)


def _number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _met(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table with the machine described under it."""
    submit, e2e, latency, memory = results["submit"], results["end_to_end"], results["latency"], results["memory"]
    rows = [
        ("Submit throughput, requests/s (baseline: bare `delay()` view)",
         _number(submit["baseline"]["median"]), _number(submit["conveyor"]["median"]),
         f"{submit['ratio']:.2f}×", "≥ 1.0×", _met(submit["met"])),
        (f"End-to-end, {e2e['jobs']:,} no-op jobs drained, jobs/s (baseline: results off)",
         _number(e2e["baseline"]["median"]), _number(e2e["conveyor"]["median"]),
         f"{e2e['ratio']:.2f}×", "≥ 0.8× and ≥ 1,000/s", _met(e2e["met"])),
        (f"Latency 202 → job start, p50 ms ({latency['samples']:,} samples, idle)",
         "—", _number(latency["p50_ms"], 1), "", "≤ 5 ms", _met(latency["p50_met"])),
        ("Latency 202 → job start, p99 ms", "—", _number(latency["p99_ms"], 1), "", "≤ 25 ms",
         _met(latency["p99_met"])),
    ]
    for role in ("web", "worker"):
        for state in ("idle", "load"):
            rows.append((f"{role.capitalize()} RSS {'at idle' if state == 'idle' else 'under load'}, MiB",
                         _number(memory[role]["baseline"][f"{state}_mib"]),
                         _number(memory[role]["conveyor"][f"{state}_mib"]), "", "reported", ""))
    backlog = results.get("backlog")
    if backlog:
        rows += [
            (f"Backlog ({backlog['jobs']:,} queued + {backlog['retrying']:,} in backoff): worker RSS peak / idle",
             "", f"{backlog['worker_rss_peak_mib']:,.0f} / {backlog['worker_rss_idle_mib']:,.0f} MiB",
             f"{backlog['worker_rss_ratio']:.2f}×", "≤ 1.2×", _met(backlog["worker_rss_met"])),
            (f"Backlog: `{backlog['page']}` p99 under backlog / idle", "",
             f"{backlog['page_p99_ms']:,.1f} / {backlog['page_idle_p99_ms']:,.1f} ms",
             f"{backlog['page_ratio']:.2f}×", "< 2×", _met(backlog["page_met"])),
            ("Backlog: every job ended succeeded", "", f"{backlog['succeeded']:,} of {backlog['total']:,}", "",
             "all", _met(backlog["all_succeeded"])),
        ]
    lines = ["| Measurement | Baseline | Conveyor | Ratio | Target | Met |", "| --- | ---: | ---: | ---: | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    machine = results["machine"]
    packages = machine["packages"]
    lines += [
        "",
        f"Measured {results['finished_at'][:16].replace('T', ' ')} UTC on {machine['cores']} cores "
        f"({machine['cpu']}), {machine['memory_gib']} GiB, {machine['os']}; Python {machine['python']}, "
        f"Django {packages['Django']}, Celery {packages['celery']}, kombu {packages['kombu']}, "
        f"django-celery-results {packages['django-celery-results']}, gunicorn {packages['gunicorn']}, "
        f"PostgreSQL {machine['postgresql']}, RabbitMQ {machine['rabbitmq']}, load from {machine['load_generator']} "
        f"on loopback. Load average {machine['load_average_start']:.2f} at the start, "
        f"{machine['load_average_end']:.2f} at the end. Throughputs are medians of {results['settings']['rounds']} "
        "alternating rounds; ratios are the median of each round's Conveyor / baseline.",
    ]
    if latency["p50_ms"] < 0:
        lines += ["", "A negative latency means the job started before the client read the 202: the relay "
                  "publishes a job the moment its row is committed, while the request is still answering."]
    if results["settings"].get("smoke"):
        lines.append("")
        lines.append("Smoke run: sizes too small for the figures to mean anything.")
    return "\n".join(lines) + "\n"
