"""`domainft` command line: the only reader of argv; each command is a driver in domainft.commands,
imported lazily (so are the heavy layers)."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

from domainft.config import ConfigError, load_config
from domainft.errors import UserError


def _env_defaults() -> None:
    # Offline by default: a hub name still works when HF_HUB_OFFLINE=0 is set by the user.
    # (No torch import here: validate, plan's config checks and k8s-validate stay light.)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _load(a, logs: bool = True):
    """The validated config of a command; commands that run Ray or models log libraries to a file."""
    cfg = load_config(a.config, a.overrides)
    if logs:
        from domainft import console

        console.setup_logging(cfg.output_dir)
        if hasattr(a, "redirects"):  # native stderr (Ray's C++ logs) to the log file until the command ends
            a.redirects.enter_context(console.native_to_log())
    return cfg


def _closing(cfg) -> None:
    from domainft import console

    for line in console.closing_lines(cfg.output_dir):
        print(line)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-5 train.epochs=2")


def cmd_validate(a) -> int:
    from domainft.commands.validate import run_validate

    print(run_validate(_load(a, logs=False), a.config), end="")
    print("# valid", file=sys.stderr)
    return 0


def cmd_prepare(a) -> int:
    cfg = _load(a)
    from domainft.commands.prepare import main

    main(cfg)
    _closing(cfg)
    return 0


def cmd_augment(a) -> int:
    cfg = _load(a)
    from domainft.commands.augment import run_augment

    run_augment(cfg)
    _closing(cfg)
    return 0


def cmd_train(a) -> int:
    cfg = _load(a)
    from domainft.commands.train import main

    main(cfg, source=a.config)
    _closing(cfg)
    return 0


def cmd_distill(a) -> int:
    cfg = _load(a)
    from domainft.commands.distill import run_distill

    run_distill(cfg)
    _closing(cfg)
    return 0


def cmd_plan(a) -> int:
    from domainft.commands.plan import run_plan

    print(run_plan(_load(a, logs=False), a.gpus, a.json))
    return 0


def cmd_tune(a) -> int:
    from domainft.commands.tune import run_tune

    run_tune(a.config, a.overrides)
    return 0


def cmd_terms(a) -> int:
    cfg = _load(a)
    from domainft.commands.terms import run_terms

    run_terms(cfg, a.top, a.out)
    _closing(cfg)
    return 0


def cmd_audit(a) -> int:
    cfg = _load(a)
    from domainft.commands.audit import run_audit

    run_audit(cfg, a.folds)
    _closing(cfg)
    return 0


def cmd_k8s_validate(a) -> int:
    from domainft.deploy.k8s import format_findings, validate_tree

    findings = validate_tree(a.path, build_parser())
    print(format_findings(findings))
    return 1 if findings else 0


def cmd_export(a) -> int:
    from domainft.commands.export import run

    return run(a.model_dir, a.out_dir, quantize=a.quantize, check=a.check, max_length=a.max_length,
               trust_remote_code=a.trust_remote_code, exporter=a.exporter, threads=a.threads)


def cmd_serve(a) -> int:
    from domainft.config.serve import validate_serve

    cfg = validate_serve({k: v for k, v in (
        ("model_dir", a.model_dir), ("backend", a.backend), ("variant", a.variant), ("max_length", a.max_length),
        ("replicas", a.replicas),
        ("replica_cpus", a.replica_cpus), ("max_batch_size", a.max_batch_size), ("batch_wait_ms", a.batch_wait_ms),
        ("max_queued", a.max_queued), ("max_texts", a.max_texts), ("max_body_bytes", a.max_body_bytes),
        ("trust_remote_code", a.trust_remote_code)) if v is not None}, "domainft serve")
    from domainft.commands.serve import run_serve

    run_serve(cfg, a.host, a.port, a.address)
    return 0


def cmd_setup_wordnet(a) -> int:
    from domainft.data.augment.wordnet_setup import build_wordnet

    print(f"WordNet ready in {build_wordnet(a.dest)} (add it to NLTK_DATA or DOMAINFT_NLTK_DATA if not default)")
    return 0


def _at_least(low: int):
    def parse(value: str) -> int:
        n = int(value)
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {n}")
        return n

    return parse


_positive = _at_least(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="domainft", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an internal error")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray, Ray Data, DeepSpeed and transformers output too (always in <output_dir>/logs/)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run_commands, _add_inspection_commands, _add_export, _add_serve, _add_tools):
        add(sub)
    for p in sub.choices.values():  # `domainft train CONFIG --debug` works as well as `domainft --debug train`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _add_run_commands(sub) -> None:
    """The commands of the path: a config (and dotted overrides) each."""
    for name, fn, help_ in (
        ("validate", cmd_validate, "validate a config and print it resolved"),
        ("prepare", cmd_prepare, "read, clean, balance, split, augment and tokenize the corpus (Ray Data)"),
        ("augment", cmd_augment, "run only the augmentation of the train split and write it"),
        ("train", cmd_train, "prepare if needed, then fine-tune on Ray Train + DeepSpeed"),
        ("distill", cmd_distill, "train a smaller student on a fine-tuned teacher's soft labels (distill: section)"),
    ):
        p = sub.add_parser(name, help=help_)
        _config_args(p)
        p.set_defaults(fn=fn)
    p = sub.add_parser("tune", help="Ray Tune sweep over dotted config keys")
    p.add_argument("config", help="sweep YAML")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the sweep file")
    p.set_defaults(fn=cmd_tune)


def _add_inspection_commands(sub) -> None:
    p = sub.add_parser("plan", help="parameter groups, LRs, unfreezing timeline, DeepSpeed config, memory (no Ray)")
    _config_args(p)
    p.add_argument("--gpus", type=int, default=None, help="GPUs for the memory estimate (default scaling.num_workers)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("terms", help="mine candidate domain terms from the corpus for augment.protected_terms (no Ray)")
    _config_args(p)
    p.add_argument("--top", type=_positive, default=1000, help="most terms written (default 1000)")
    p.add_argument("--out", default=None,
                   help="term file (default <output_dir>/domain_terms.txt; scores in a .tsv beside it)")
    p.set_defaults(fn=cmd_terms)
    p = sub.add_parser("audit", help="find likely label errors: K-fold out-of-fold predictions (Ray Train runs as a "
                                     "Ray Tune grid) and cleanlab; writes <output_dir>/audit/label_issues.csv")
    _config_args(p)
    p.add_argument("--folds", type=_at_least(2), default=5, help="cross-validation folds (default 5)")
    p.set_defaults(fn=cmd_audit)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="ONNX Runtime export (fused fp32, optional int8) with parity checks")
    p.add_argument("model_dir", help="a fine-tuned HF classifier folder, e.g. <output_dir>/best")
    p.add_argument("out_dir", help="where model.onnx, model.int8.onnx, the tokenizer and export_report.json go")
    p.add_argument("--quantize", choices=["int8"], default=None, help="also write a dynamic-int8 model.int8.onnx")
    p.add_argument("--check", default=None, metavar="DATA",
                   help="labelled texts for agreement/accuracy: a corpus file (text/label) or a prepared split "
                        "folder such as <output_dir>/data/eval")
    p.add_argument("--max-length", type=int, default=None, help="longest input in tokens (default: the model's)")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="torch.onnx exporter (torchscript: the graph ONNX Runtime's fusions match)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for the checks (torch and ORT)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the checkpoint")
    p.set_defaults(fn=cmd_export)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP on Ray Serve (batched; blocks until Ctrl-C)")
    p.add_argument("model_dir", help="a `best/` folder (--backend torch) or a `domainft export` folder (--backend onnx)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=_positive, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="torch (default) or onnx")
    p.add_argument("--variant", choices=["fp32", "int8"], default="fp32", help="ONNX model: fp32 (default) or int8")
    p.add_argument("--max-length", type=_positive, default=None,
                   help="truncate texts to this many tokens (default: the model's; use the training max_length)")
    p.add_argument("--replicas", type=_positive, default=None, help="model replicas (default 1)")
    p.add_argument("--replica-cpus", type=float, default=None, help="CPUs reserved per replica (default 1)")
    p.add_argument("--max-batch-size", type=_positive, default=None,
                   help="texts per forward pass across requests (default 32; 1: no batching)")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="how long a replica waits for a batch to fill (default 5)")
    p.add_argument("--max-queued", type=_positive, default=None,
                   help="requests queued beyond what the replicas hold; more get 503 + Retry-After (default 256)")
    p.add_argument("--max-texts", type=_positive, default=None, help="most texts in one request (default 64)")
    p.add_argument("--max-body-bytes", type=_positive, default=None, help="largest request body (default 1 MiB)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting a local one")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow model code shipped with the checkpoint")
    p.set_defaults(fn=cmd_serve)


def _add_tools(sub) -> None:
    p = sub.add_parser("k8s-validate", help="validate KubeRay manifests against the CRD schemas")
    p.add_argument("path", nargs="?", default="k8s", help="folder of manifests")
    p.set_defaults(fn=cmd_k8s_validate)
    p = sub.add_parser("setup-wordnet", help="build NLTK WordNet from Debian's wordnet-base (offline)")
    p.add_argument("dest", nargs="?", default=None, help="NLTK data folder (default ~/.cache/domainft/nltk_data)")
    p.set_defaults(fn=cmd_setup_wordnet)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _env_defaults()
    if args.verbose:
        os.environ["DOMAINFT_VERBOSE"] = "1"
    try:
        with contextlib.ExitStack() as stack:  # what a command redirects ends with it (see _load)
            args.redirects = stack
            return args.fn(args)
    except (ConfigError, UserError) as e:  # the user's input: one clear message, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: keep its traceback (on screen with --debug, else in a file)
        if args.debug:
            raise
        path = _write_traceback()
        print(f"error: internal error (a bug, not a problem with your input): {type(e).__name__}: "
              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}\n  traceback: {path} "
              f"(or run again with --debug)", file=sys.stderr)
        return 1


def _write_traceback() -> str:
    import tempfile
    import time
    import traceback

    d = os.path.join(os.path.expanduser("~"), ".cache", "domainft", "logs")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        d = tempfile.gettempdir()
    path = os.path.join(d, f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    with open(path, "w", encoding="utf-8") as f:
        traceback.print_exc(file=f)
    return path


if __name__ == "__main__":
    sys.exit(main())
