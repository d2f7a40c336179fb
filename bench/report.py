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


Row = tuple[str, str, str, str, str, str]


def _compared_rows(title: str, compared: dict[str, Any], labels: dict[str, dict[str, str]], *, digits: int = 0,
                   note: dict[str, str] | None = None) -> list[Row]:
    """One row per baseline of `compared`: its figure, Conveyor's, their paired ratio and its target.

    `note` adds a side's second figure in parentheses after its first (the real work's peak in flight).
    """
    def cell(name: str) -> str:
        figure = _number(compared[name]["median"], digits)
        return f"{figure} ({note[name]})" if note else figure

    return [(f"{title} (baseline: {labels[name]['label']})", cell(name), cell("conveyor"), f"{ratio['ratio']:.2f}×",
             "reported" if ratio["target"] is None else f"≥ {ratio['target']:.1f}×", _met(ratio["met"]))
            for name, ratio in compared["ratios"].items()]


def _latency_rows(title: str, latency: dict[str, Any]) -> list[Row]:
    return [(f"{title}, {stat} ms", "—", _number(latency[f"{stat}_ms"], 1), "",
             f"≤ {latency[f'{stat}_target_ms']:g} ms", _met(latency[f"{stat}_met"]))
            for stat in ("p50", "p99") if f"{stat}_target_ms" in latency]


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table with the machine described under it."""
    webs, workers, e2e = results["webs"], results["workers"], results["end_to_end"]
    latency, loaded, memory = results["latency"], results["latency_loaded"], results["memory"]
    rows = _compared_rows("Submit, requests/s", results["submit"]["throughput"], webs)
    rows += _compared_rows(f"End to end, {e2e['jobs']:,} no-op jobs drained, jobs/s", e2e["throughput"], workers)
    for work in results["real_work"]:
        rows += _compared_rows(
            f"Real work, {work['jobs']:,} webhooks answered after {work['delay_ms']} ms, deliveries/s (peak in flight)",
            work["throughput"], workers, note={name: str(peak) for name, peak in work["peak_in_flight"].items()})
    rows += _latency_rows(f"Latency 202 → job start, idle ({latency['samples']:,} samples)", latency)
    rows += _latency_rows(f"Latency 202 → job start under {loaded['rate_per_second']:,.0f} submissions/s, half the "
                          f"end-to-end rate ({loaded['samples']:,} samples)", loaded)
    rows += _compared_rows("CPU s per 1,000 jobs, end to end (lower is better)", e2e["cpu_per_1000"], workers,
                           digits=2)
    for work in results["real_work"]:
        rows += _compared_rows(f"CPU s per 1,000 jobs, real work at {work['delay_ms']} ms (lower is better)",
                               work["cpu_per_1000"], workers, digits=2)
    for role in ("web", "worker"):
        for state in ("idle", "load"):
            rows.append((f"{role.capitalize()} RSS {'at idle' if state == 'idle' else 'under load'}, MiB "
                         f"(baseline: {(webs if role == 'web' else workers)['baseline']['label']})",
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
        f"{machine['load_average_end']:.2f} at the end. Figures are medians of {results['settings']['rounds']} "
        "alternating rounds; ratios are the median of each round's Conveyor / baseline.",
    ]
    if min(latency["p50_ms"], loaded["p50_ms"]) < 0:
        lines += ["", "A negative latency means the job started before the client read the 202: the relay "
                  "publishes a job the moment its row is committed, while the request is still answering."]
    if results["settings"].get("smoke"):
        lines.append("")
        lines.append("Smoke run: sizes too small for the figures to mean anything.")
    return "\n".join(lines) + "\n"
