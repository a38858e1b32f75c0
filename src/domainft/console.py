"""What a person sees: progress bars and our own lines on the console; every library's logs in a file.

`setup_logging(output_dir)` sends the loggers of Ray, Ray Data, DeepSpeed, transformers and Python's
warnings to `<output_dir>/logs/domainft.log` (on the console too with `--verbose`, which sets
DOMAINFT_VERBOSE=1). No Ray, no torch: the CLI calls it before anything heavy is imported.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "deepspeed", "DeepSpeed", "transformers",
                   "torch", "py.warnings", "filelock", "urllib3", "jieba", "httpx", "fsspec", "optuna", "matplotlib")
_state: dict = {"log": None}


def verbose() -> bool:
    return os.environ.get("DOMAINFT_VERBOSE", "") not in ("", "0")


def log_path() -> Optional[Path]:
    return _state["log"]


def logs_dir(output_dir: str) -> Path:
    if "://" in output_dir:  # remote outputs: logs stay on this machine
        return Path.home() / ".cache" / "domainft" / "logs"
    return Path(output_dir) / "logs"


def setup_logging(output_dir: str) -> Path:
    """Route library logs to `<output_dir>/logs/domainft.log` (append) and keep the console for us.

    Called again (e.g. per A/B arm) it moves the file handler. Library env settings that quiet their
    own console output (progress bars, advisory warnings) are set here too, for this process and,
    through the Ray runtime env (distributed/cluster.py), for workers.
    """
    d = logs_dir(output_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "domainft.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    for env, value in (("TRANSFORMERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("RAY_DEDUP_LOGS", "1")):
        os.environ.setdefault(env, value)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler] + ([logging.StreamHandler(sys.stderr)] if verbose() else [])
        logger.propagate = False
        if name.startswith("ray"):  # Ray's execution plans and progress notes are worth a log file
            logger.setLevel(logging.INFO)
    _state["log"] = path
    return path


def quiet_libraries() -> None:
    """Re-apply the routing after a library reconfigured its loggers (Ray Data does on first use)."""
    if _state["log"] is not None:
        setup_logging(str(_state["log"].parent.parent))


@contextlib.contextmanager
def to_log() -> Iterator[None]:
    """Send what a library prints (not logs) to the log file: DeepSpeed's checkpoint consolidation,
    transformers' load reports. With --verbose it stays on the console."""
    if verbose() or _state["log"] is None or _state.get("out") is not None:
        yield
        return
    _state["out"], _state["err"] = sys.stdout, sys.stderr  # our own lines and bars still reach the console
    try:
        with open(_state["log"], "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), \
                contextlib.redirect_stderr(f):
            yield
    finally:
        _state["out"] = _state["err"] = None


def _out():
    return _state.get("out") or sys.stdout


def _err():
    return _state.get("err") or sys.stderr


class LineBar:
    """A progress bar for a console that is not a terminal (CI, a file): a full line at most every
    `every` seconds and one at the end, instead of carriage-return redraws that pile up."""

    def __init__(self, total: Optional[int], desc: str, unit: str, every: float = 30.0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n, self.postfix, self.t0 = 0, "", time.time()
        self.last = self.t0

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.time() - self.last >= self.every:
            self._line()

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        self.last = time.time()
        elapsed = self.last - self.t0
        done = f"{self.n:,}/{self.total:,} {self.unit}" if self.total else f"{self.n:,} {self.unit}"
        pct = f" ({self.n / self.total:.0%})" if self.total else ""
        eta = ""
        if self.total and 0 < self.n < self.total:
            eta = f", ETA {_clock(elapsed * (self.total - self.n) / self.n)}"
        say(f"{self.desc}: {done}{pct}, {_clock(elapsed)}{eta}" + (f", {self.postfix}" if self.postfix else ""))


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def bar(total: Optional[int], desc: str, unit: str = "it"):
    """A tqdm bar on a terminal's stderr, else a LineBar."""
    if not _err().isatty():
        return LineBar(total, desc, unit)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=_err(), dynamic_ncols=True, leave=True, mininterval=0.5,
                smoothing=0.1)


@contextlib.contextmanager
def native_to_log() -> Iterator[None]:
    """Send what native code writes to the process's stderr (Ray's C++ core worker logs, glog lines)
    to the log file, while Python's own sys.stderr (our bars, tracebacks) keeps the console."""
    if verbose() or _state["log"] is None or _state.get("native"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    console_err = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    with open(_state["log"], "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
    previous, sys.stderr, _state["native"] = sys.stderr, console_err, True
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr, _state["native"] = previous, False
        console_err.close()


def say(line: str) -> None:
    """One of our own lines, above any progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=_out())
    _out().flush()


def closing_lines(output_dir: str) -> list[str]:
    """The last lines of a command: where the logs went."""
    path = log_path() or logs_dir(output_dir) / "domainft.log"
    return [f"logs: {path.parent}/ (Ray, DeepSpeed and transformers output; --verbose shows it here)"]
