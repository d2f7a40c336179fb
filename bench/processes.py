"""The processes under test: Procfile commands started as Conveyor runs them, their memory, their end."""
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def procfile_command(name: str) -> str:
    """The command line of process `name` in the Procfile, so the benchmark runs what `make run` runs."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        process, _, command = line.partition(": ")
        if process == name:
            return command
    raise LookupError(f"The Procfile has no {name!r} process.")


def with_option(command: str, option: str, value: str) -> str:
    """`command` with the value of `option` (`-A`, `--queues`) set to `value`; the option must be there."""
    pattern = re.compile(rf"(?<!\S){re.escape(option)}(?:\s+|=)\S+")
    if not pattern.search(command):
        raise LookupError(f"Expected {option} in the Procfile command {command!r}; update bench/ to match.")
    return pattern.sub(f"{option} {value}", command, count=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the process and all its descendants (gunicorn or Celery pool children)."""
        return sum(self.rss_by_pid().values())

    def rss_by_pid(self) -> dict[int, int]:
        return {pid: _rss_bytes(pid) for pid in _tree(self.popen.pid)}

    def send(self, number: int) -> None:
        """Send `number` to the whole process group: the shell and what it started."""
        try:
            os.killpg(self.popen.pid, number)
        except ProcessLookupError:
            pass

    def gone(self) -> bool:
        """True once the shell is reaped and no process of its group is left."""
        if self.popen.poll() is None:
            return False
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def stop(self, number: int = signal.SIGTERM, timeout: float = 60) -> None:
        """Send `number` to the group and wait until all of it has exited; SIGKILL what is left after `timeout`."""
        self.send(number)
        try:
            wait_until(self.gone, timeout=timeout, what=f"{self.name} to exit")
        except TimeoutError:
            self.send(signal.SIGKILL)
            wait_until(self.gone, timeout=10, what=f"{self.name} to die")


def start(name: str, command: str, *, env: dict[str, str], log_dir: Path) -> Process:
    """Run `command` through the shell, as honcho and docker compose run a Procfile line."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("w") as handle:
        popen = subprocess.Popen(["sh", "-c", command], cwd=ROOT, env=env, stdout=handle,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    return Process(name=name, popen=popen, log=log)


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout:.0f} s waiting for {what}.")


def wait_ready(process: Process, marker: str, *, timeout: float = 90) -> None:
    """Wait for `marker` in the process's log; a process that exits first stops the benchmark."""
    wait_until(lambda: marker in process.output() or process.popen.poll() is not None, timeout=timeout,
               what=f"{process.name} to start")
    if process.popen.poll() is not None:
        raise RuntimeError(f"{process.name} exited at start:\n{process.output()[-3000:]}")


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The parent pid is the second field after the parenthesised command name.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(parents.get(pid, []))
    return found


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class RssSampler:
    """Samples a process tree's resident memory in the background.

    `peak` is the largest total; `peaks` the largest of each process, to tell which one grew.
    """

    process: Process
    interval: float = 0.25
    peak: int = 0
    peaks: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "RssSampler":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self.process.rss_by_pid()
            self.peak = max(self.peak, sum(sample.values()))
            for pid, rss in sample.items():
                self.peaks[pid] = max(self.peaks.get(pid, 0), rss)
            self._stop.wait(self.interval)
