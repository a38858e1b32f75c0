"""`domainft serve MODEL_DIR`: setup (the options, validated; the folder checked by the task whose model it
holds, before Ray starts) -> run (the app on Ray Serve: distributed/serve.py; wait until the model answers)
-> serve until Ctrl-C, then stop what was started."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Optional

from domainft.config.serve import ServeConfig


def run_serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, address: Optional[str] = None) -> None:
    from domainft import console
    from domainft.distributed.serve import application_on_ray, wait_ready
    from domainft.tasks import task_of_model_dir

    task = task_of_model_dir(cfg.model_dir)
    served = task.check_model_dir(cfg)
    console.setup_logging(str(Path.home() / ".cache" / "domainft" / "serve"))  # logs/domainft.log there
    try:
        with application_on_ray(cfg, host, port, address) as url:
            # Ctrl-C, `kill`, a container stop: shut down what was started (installed after ray.init, whose own
            # SIGTERM handler would exit without it)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _stop)
            shown = ", ".join(served[:12]) + (f" and {len(served) - 12} more" if len(served) > 12 else "")
            print(f"loading {cfg.model_dir} (task {task.name}: {shown}) on {cfg.replicas} replica(s) ...", flush=True)
            wait_ready(url)
            batching = f"batches of up to {cfg.max_batch_size}" if cfg.max_batch_size > 1 else "no batching"
            lines = [f"serving at {url}  ({batching}, {cfg.batch_wait_ms:g} ms wait, {cfg.max_queued} queued max)",
                     f"  API docs:  {url}/docs", f"  models:    curl -s {url}/v1/models",
                     *task.serve_examples(url, served), "Ctrl-C to stop"]
            print("\n".join(lines), flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)


def _stop(signum, frame) -> None:
    # Once: a second signal (a terminal's Ctrl-C reaches every process of the group, `timeout` forwards its
    # own) would interrupt the shutdown, and Ray's excepthook then hangs instead of exiting.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt
