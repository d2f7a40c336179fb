"""py-spy sampling of a process tree during one measurement, and a plain-text summary of where time went."""
import collections
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.processes import Process

# Samples per second: enough to see a 1% cost in a few seconds, light enough not to swamp 2 cores.
SAMPLE_RATE = 250
# Functions listed in a summary, by the share of samples they appear in.
SUMMARY_LINES = 40


@contextmanager
def profiled(process: Process, output: Path | None) -> Iterator[None]:
    """Sample `process` and its children into `output` (collapsed stacks) while the block runs; None: don't."""
    if output is None:
        yield
        return
    if shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy on PATH: pip install py-spy (a tool, not a requirement).")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--pid", str(process.popen.pid), "--subprocesses", "--nonblocking",
               "--rate", str(SAMPLE_RATE), "--format", "raw", "--output", str(output)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    output.with_suffix(".txt").write_text(summary(output))


def summary(collapsed: Path) -> str:
    """Each function's share of the samples (inclusive, counted once per stack), busiest first."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        # py-spy's raw frames read "function (file:line)"; drop the line so a function counts once.
        frames = {frame.rsplit(":", 1)[0] + ")" if ":" in frame else frame for frame in stack.split(";")}
        for frame in frames:
            inclusive[frame] += samples
    lines = [f"{total} samples; share of samples each function appears in (inclusive):"]
    lines += [f"{100 * samples / total:5.1f}%  {frame}" for frame, samples in inclusive.most_common(SUMMARY_LINES)]
    return "\n".join(lines) + "\n"
