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


def bar(total: Optional[int], desc: str, unit: str = "it"):
    """A tqdm bar on stderr; on a non-terminal (CI, a log) it redraws rarely, so it costs few lines."""
    from tqdm import tqdm

    tty = _err().isatty()
    plain = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
    return tqdm(total=total, desc=desc, unit=unit, file=_err(), dynamic_ncols=tty, leave=True,
                mininterval=0.5 if tty else 30.0, smoothing=0.1,
                bar_format=None if tty or total is None else plain)


def say(line: str) -> None:
    """One of our own lines, above any progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=_out())
    _out().flush()


def closing_lines(output_dir: str) -> list[str]:
    """The last lines of a command: where the logs went."""
    path = log_path() or logs_dir(output_dir) / "domainft.log"
    return [f"logs: {path.parent}/ (Ray, DeepSpeed and transformers output; --verbose shows it here)"]
