"""The processes under test: Procfile commands started as Conveyor runs them, their memory, their end."""
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# /proc/<pid>/stat counts CPU time in clock ticks.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def procfile_command(name: str) -> str:
    """The command line of process `name` in the Procfile, so the benchmark runs what `make run` runs."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        process, _, command = line.partition(": ")
        if process == name:
            return command
    raise LookupError(f"The Procfile has no {name!r} process.")


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

    def kill(self) -> None:
        """SIGKILL the whole group: no chance to acknowledge or clean up (a crash, an out-of-memory kill)."""
        self.stop(signal.SIGKILL, timeout=10)

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


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """Every process's parent pid, name and CPU ticks, from one pass over /proc/<pid>/stat.

    The ticks are utime + stime + cutime + cstime: a process's own time and that of the children it
    reaped, so a child that exits between two readings (a recycled pool process, a PostgreSQL backend
    of a closed connection) still counts, in its parent.
    """
    table: dict[int, tuple[int, str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, tail = stat.rpartition(")")
        fields = tail.split()
        # After the parenthesised name: state, ppid, ... and utime, stime, cutime, cstime at 11 to 14.
        table[int(entry.name)] = (int(fields[1]), head.partition("(")[2], sum(int(value) for value in fields[11:15]))
    return table


def _tree(root: int, table: dict[int, tuple[int, str, int]] | None = None) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in (table if table is not None else _proc_table()).items():
        children.setdefault(ppid, []).append(pid)
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def cpu_seconds(roots: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each role's process trees, given by their roots' pids."""
    table = _proc_table()
    return {role: sum(table[pid][2] for root in pids for pid in _tree(root, table) if pid in table) / CLOCK_TICKS
            for role, pids in roots.items()}


def pid_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds used so far by each of `pids` (and the children it reaped), not its live descendants; a pid
    that is gone is left out."""
    table = _proc_table()
    return {pid: table[pid][2] / CLOCK_TICKS for pid in pids if pid in table}


def server_pids(name: str, *, port: int) -> list[int]:
    """The root process of the server named `name` (`postgres`, `beam.smp`) that listens on `port`.

    By name, the postmaster or the RabbitMQ node rather than their children; by port, the one the
    benchmark uses when others run beside it (a test cluster, rabbitmqctl's own `beam.smp`).
    """
    table = _proc_table()
    roots = [pid for pid, (ppid, process_name, _) in table.items()
             if process_name == name and table.get(ppid, (0, "", 0))[1] != name]
    listening = [pid for pid in roots if _listens(pid, port)]
    if not listening:
        raise LookupError(f"No process named {name} listens on port {port} here; CPU per job reads the servers "
                          "from /proc, so the benchmark needs PostgreSQL and RabbitMQ on this machine.")
    return listening


def _listens(pid: int, port: int) -> bool:
    """True when `pid` holds a socket listening on TCP `port` (in its own network namespace)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address as hex ip:port, state 0A is LISTEN, and the socket's inode.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    try:
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


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
