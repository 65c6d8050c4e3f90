"""What the benchmark wraps around each Lambda invocation: a clock, a memory window, optionally a turn and a profiler.

How memory is measured is METHOD below, which the report prints with the figures.
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from statemachine.local import runner

METHOD = """\
Memory: the handlers run in this process, up to four at once in a Map's threads, and no allocator can tell one
thread's bytes from another's. A sampler thread reads, every 2 ms, three process-wide figures, each the peak since
its previous reading: Arrow's pool (bytes allocated; exact when the pool set a new record in the interval), the
RSS high-water mark (VmHWM, reset after each read through /proc/self/clear_refs, so each reading is the
interval's exact peak RSS) and, with --tracemalloc, the traced Python heap (peak, reset after each read). Each
invocation keeps the maxima of the readings taken while it ran: Arrow as the absolute pool peak (the pool is
nearly empty between invocations), RSS and Python as growth over their value at its start. With invocations side
by side the readings include the neighbours: upper bounds. --serial runs one invocation at a time, which makes
them the invocation's own. est. Lambda = RSS of a fresh interpreter that imported the function's handler + the
invocation's RSS growth, since a Lambda has a process of its own."""

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = "/proc/self/clear_refs"
_RSS_FIELDS = re.compile(rb"^(VmRSS|VmHWM):\s+(\d+) kB", re.MULTILINE)


def map_of(function_name: str, table: str) -> str:
    """The Map (or task) state an invocation belongs to: its stage, with loads split into dimensions and facts."""
    stage = runner.STAGE_OF[function_name]
    if stage == "load":
        return "load facts" if table.startswith("fact_") else "load dimensions"
    return stage


@dataclass(frozen=True)
class Reading:
    """Process-wide memory, each figure the peak since the previous reading (None: not measured here)."""

    arrow: int
    rss: int | None
    rss_peak: int | None
    python: int | None
    python_peak: int | None


@dataclass
class Window:
    """One invocation as the benchmark saw it: time, outcome and memory."""

    function: str
    table: str
    started: float
    arrow_start: int
    rss_start: int | None
    python_start: int | None
    seconds: float = 0.0
    cpu: float = 0.0  # CPU time of the invoking thread: no waiting for the GIL or the server, no Arrow worker threads
    ok: bool = True
    result: dict[str, Any] = field(default_factory=dict)
    arrow_peak: int = 0
    rss_peak: int | None = None
    python_peak: int | None = None

    @property
    def map(self) -> str:
        return map_of(self.function, self.table)

    @property
    def rss_growth(self) -> int | None:
        return None if self.rss_peak is None or self.rss_start is None else self.rss_peak - self.rss_start

    @property
    def python_growth(self) -> int | None:
        return None if self.python_peak is None or self.python_start is None else self.python_peak - self.python_start

    def take(self, reading: Reading) -> None:
        self.arrow_peak = max(self.arrow_peak, reading.arrow)
        if reading.rss_peak is not None:
            self.rss_peak = max(self.rss_peak or 0, reading.rss_peak)
        if reading.python_peak is not None:
            self.python_peak = max(self.python_peak or 0, reading.python_peak)


class MemoryProbe:
    """The sampler thread and the open windows; use as a context manager around the runs."""

    def __init__(self, *, interval: float = 0.002, trace_python: bool = False) -> None:
        self.interval, self.trace_python = interval, trace_python
        self._pool = pa.default_memory_pool()
        self._arrow_record = self._pool.max_memory()
        self._clear_refs: int | None = None
        self._open: list[Window] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-probe", daemon=True)

    def __enter__(self) -> MemoryProbe:
        with contextlib.suppress(OSError):
            self._clear_refs = os.open(_CLEAR_REFS, os.O_WRONLY)
        if self.trace_python:
            tracemalloc.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.trace_python:
            tracemalloc.stop()
        if self._clear_refs is not None:
            os.close(self._clear_refs)

    @property
    def exact_rss_peaks(self) -> bool:
        """False where /proc/self/clear_refs cannot be written: RSS peaks are then 2 ms samples."""
        return self._clear_refs is not None

    def open(self, function: str, table: str) -> Window:
        with self._lock:
            reading = self._read()
            window = Window(function, table, time.monotonic(), reading.arrow, reading.rss, reading.python)
            window.take(reading)
            self._open.append(window)
            return window

    def close(self, window: Window) -> None:
        with self._lock:
            self._fold(self._read())
            self._open.remove(window)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._fold(self._read())

    def _fold(self, reading: Reading) -> None:
        for window in self._open:
            window.take(reading)

    def _read(self) -> Reading:
        arrow, record = self._pool.bytes_allocated(), self._pool.max_memory()
        if record > self._arrow_record:  # the pool set a new record since the last reading: that is the peak
            arrow, self._arrow_record = record, record
        rss = rss_peak = None
        with contextlib.suppress(OSError):
            fields = dict(_RSS_FIELDS.findall(_STATUS.read_bytes()))
            rss = int(fields[b"VmRSS"]) * 1024
            rss_peak = int(fields[b"VmHWM"]) * 1024 if self._clear_refs is not None else rss
            if self._clear_refs is not None:
                os.write(self._clear_refs, b"5")  # restart the high-water mark from the current RSS
        python = python_peak = None
        if tracemalloc.is_tracing():
            python, python_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
        return Reading(arrow, rss, rss_peak, python, python_peak)


class Instruments:
    """The real handlers, each wrapped in a clock and a memory window; one instance per pipeline run."""

    def __init__(self, probe: MemoryProbe, *, serial: bool = False, profile: Iterable[str] = ()) -> None:
        self.probe = probe
        self.windows: list[Window] = []
        self.profiles: dict[str, list[cProfile.Profile]] = {stage: [] for stage in profile}  # stage -> invocations
        self._turn = threading.Lock() if serial else contextlib.nullcontext()
        self._lock = threading.Lock()

    def handlers(self) -> dict[str, Callable[..., Any]]:
        """The dict `runner.run(handlers=...)` takes, keyed by function name."""
        return {name: self._wrap(name, module) for name, module in runner.FUNCTIONS.values()}

    def _wrap(self, function_name: str, module_name: str) -> Callable[..., Any]:
        stage = runner.STAGE_OF[function_name]

        def invoke(event: dict[str, Any], context: Any) -> Any:
            with self._turn:  # --serial: one invocation at a time, waiting outside the window
                window = self.probe.open(function_name, str(event.get("table", "")))
                cpu = time.thread_time()
                profile = cProfile.Profile() if stage in self.profiles else None
                try:
                    if profile:
                        profile.enable()  # this thread only: each invocation has its own profile
                    # Imported on the first call, inside the run's environment, as the runner imports them itself.
                    result = importlib.import_module(module_name).handler(event, context)
                    window.result = result
                    return result
                except Exception as exc:
                    window.ok, window.result = False, {"errorType": type(exc).__name__, "errorMessage": str(exc)}
                    raise
                finally:
                    if profile:
                        profile.disable()
                    window.seconds = time.monotonic() - window.started
                    window.cpu = time.thread_time() - cpu
                    self.probe.close(window)
                    with self._lock:
                        self.windows.append(window)
                        if profile:
                            self.profiles[stage].append(profile)

        return invoke


def cold_rss(repo: Path) -> dict[str, int | None]:
    """RSS of a fresh interpreter that imported each function's handler: what a Lambda holds before its event."""
    code = (
        "import importlib, re, sys; importlib.import_module(sys.argv[1]);"
        "print(re.search(r'VmRSS:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))"
    )
    sizes: dict[str, int | None] = {}
    for function_name, module_name in runner.FUNCTIONS.values():
        done = subprocess.run([sys.executable, "-c", code, module_name], cwd=repo, capture_output=True, text=True)  # noqa: S603 - this interpreter on our own modules
        sizes[function_name] = int(done.stdout) * 1024 if done.returncode == 0 and done.stdout.strip() else None
    return sizes
