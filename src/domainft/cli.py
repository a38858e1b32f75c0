"""`domainft` command line: the only reader of argv; each command is a driver in domainft.commands,
imported lazily (so are the heavy layers)."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import typing

from domainft.config import Config, ConfigError, load_config
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


def _adapters(pairs) -> "typing.Optional[dict]":
    """--adapter NAME=DIR (repeated) -> {NAME: DIR}; a repeated name or a pair without = is a UserError."""
    from domainft.errors import UserError

    if not pairs:
        return None
    out: dict = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--adapter {pair!r}: write NAME=DIR (e.g. --adapter legal=runs/legal_sft/best_adapter)")
        if name in out:
            raise UserError(f"--adapter {name} is given twice")
        out[name] = folder
    return out


def cmd_serve(a) -> int:
    from domainft.config.serve import validate_serve

    cfg = validate_serve({k: v for k, v in (
        ("model_dir", a.model_dir), ("backend", a.backend), ("variant", a.variant), ("max_length", a.max_length),
        ("replicas", a.replicas),
        ("replica_cpus", a.replica_cpus), ("replica_gpus", a.replica_gpus), ("max_batch_size", a.max_batch_size),
        ("batch_wait_ms", a.batch_wait_ms),
        ("max_queued", a.max_queued), ("max_texts", a.max_texts), ("max_body_bytes", a.max_body_bytes),
        ("trust_remote_code", a.trust_remote_code), ("adapters", _adapters(a.adapter)),
        ("served_model_name", a.served_model_name), ("chat_template", a.chat_template), ("max_tokens", a.max_tokens),
        ("max_model_len", a.max_model_len)) if v is not None}, "domainft serve")
    from domainft.commands.serve import run_serve

    run_serve(cfg, a.host, a.port, a.address)
    return 0


def cmd_init(a) -> int:
    from domainft.commands.init import run_init

    print(run_init(a.data, a.out, a.model, a.task, a.force))
    return 0


def cmd_generate(a) -> int:
    from domainft.commands.generate import run_generate

    run_generate(a.model_dir, a.prompts, out=a.out, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                 top_p=a.top_p, seed=a.seed, batch_size=a.batch_size, num_actors=a.num_actors,
                 chat_template=a.chat_template, on_bad_record=a.on_bad_record)
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


DESCRIPTION = """\
Fine-tune pretrained transformers on a domain corpus (medical, legal, finance; any language) on a Ray
cluster: one YAML config from the corpus file to a fine-tuned Hugging Face model, an ONNX export and an
HTTP API. Two tasks: classification (BERT-family encoders or decoder LLMs learn labels) and sft (decoder
chat LLMs such as DeepSeek, Qwen, Llama learn answers from conversations)."""

EPILOG = """\
the path (each step reads the previous one's output):
  domainft validate run.yaml   check the config, its model and the data's first rows (no Ray, seconds)
  domainft plan run.yaml       LRs, unfreezing, DeepSpeed and memory, as the workers will use them (no Ray)
  domainft train run.yaml      prepare the corpus (Ray Data), then fine-tune (Ray Train + DeepSpeed);
                               the best model goes to <output_dir>/best
  domainft export <output_dir>/best out/   ONNX Runtime model with parity checks
  domainft serve <output_dir>/best         HTTP API on Ray Serve (classifiers; LLMs: OpenAI-compatible)
  domainft generate <output_dir>/best --prompts chats.jsonl   answers of an SFT model (Ray Data)
Any config key can be changed on the command line: domainft train run.yaml optim.lr=3e-5 train.epochs=2.
Ray starts locally unless RAY_ADDRESS names a cluster (`ray job submit` sets it).
Exit codes: 0 done, 2 a problem with your input (one message says what), 1 an internal error (a bug)."""


def build_parser() -> argparse.ArgumentParser:
    from domainft import __version__

    parser = argparse.ArgumentParser(prog="domainft", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"domainft {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an internal error")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray, Ray Data, DeepSpeed and transformers output too (always in <output_dir>/logs/)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run_commands, _add_inspection_commands, _add_export, _add_serve, _add_generate, _add_tools):
        add(sub)
    for p in sub.choices.values():  # `domainft train CONFIG --debug` works as well as `domainft --debug train`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _add_run_commands(sub) -> None:
    """The commands of the path: a config (and dotted overrides) each."""
    for name, fn, help_, what in (
        ("validate", cmd_validate, "check a config, its model and the data's first rows; print the config resolved",
         "Checks every key and value, the model's config.json, and the first 200 rows of each of the first 20 "
         "files of the data (format, columns, labels against data.labels); every problem is listed at once. "
         "No Ray, nothing written; `prepare` reads every row."),
        ("prepare", cmd_prepare, "read, clean, dedupe, split, balance, augment and tokenize the corpus (Ray Data)",
         "Starts Ray (or joins RAY_ADDRESS). Writes <output_dir>/data/: the train and eval splits as Parquet, "
         "data_report.json (counts, balance, rejects) and rejects.jsonl. `train` runs it when the data is "
         "missing or stale."),
        ("augment", cmd_augment, "run only the augmentation of the prepared train split and write it",
         "Starts Ray. Reads <output_dir>/data/train and writes the augmented rows beside it (augment: section)."),
        ("train", cmd_train, "prepare if needed, then fine-tune on Ray Train + DeepSpeed",
         "Starts Ray (or joins RAY_ADDRESS). Writes checkpoints under run.storage_path, the best epoch as a "
         "Hugging Face folder in <output_dir>/best (safetensors), metrics.json, plots and logs/. Resubmitting "
         "the same config resumes from the last checkpoint."),
        ("distill", cmd_distill, "train a smaller student on a fine-tuned teacher's soft labels (distill: section)",
         "Starts Ray. Like `train`, with the teacher (distill.teacher) scoring every batch; the student goes "
         "to <output_dir>/best."),
    ):
        p = sub.add_parser(name, help=help_, description=f"{help_[0].upper()}{help_[1:]}. {what}")
        _config_args(p)
        p.set_defaults(fn=fn)
    p = sub.add_parser("tune", help="Ray Tune sweep over dotted config keys",
                       description="Ray Tune sweep over dotted config keys of a base config. Starts Ray. The sweep "
                                   "file names the base config, the space, the searcher and the scheduler; writes "
                                   "results.csv, a plot and best_config.yaml (which `train` reads) to its "
                                   "output_dir. Running it again resumes an interrupted sweep.")
    # `config` as every command's file (k8s-validate reads RayJob entrypoints by it); shown as what it is
    p.add_argument("config", metavar="sweep", help="sweep YAML file (base:, space:, ...; see tune/ for examples)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the sweep file, e.g. num_samples=8")
    p.set_defaults(fn=cmd_tune)


def _add_inspection_commands(sub) -> None:
    p = sub.add_parser("plan", help="parameter groups, LRs, unfreezing timeline, DeepSpeed config, memory (no Ray)",
                       description="What a run will do, from the config alone: parameter groups and their peak LRs, "
                                   "the unfreezing timeline, the DeepSpeed config and the memory of each ZeRO stage. "
                                   "No Ray, no weights loaded (the model is built on the meta device), nothing "
                                   "written.")
    _config_args(p)
    p.add_argument("--gpus", type=_positive, default=None,
                   help="GPUs for the memory estimate (default scaling.num_workers)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("terms", help="mine candidate domain terms from the corpus for augment.protected_terms (no Ray)",
                       description="Mine candidate domain terms (words and phrases frequent in the corpus, rare in "
                                   "general text) for augment.protected_terms, which augmentation never changes. "
                                   "No Ray. Writes the term file and a .tsv of scores beside it.")
    _config_args(p)
    p.add_argument("--top", type=_positive, default=1000, help="most terms written (default 1000)")
    p.add_argument("--out", default=None,
                   help="term file (default <output_dir>/domain_terms.txt; scores in a .tsv beside it)")
    p.set_defaults(fn=cmd_terms)
    p = sub.add_parser("audit", help="find likely label errors: K-fold out-of-fold predictions (Ray Train runs as a "
                                     "Ray Tune grid) and cleanlab; writes <output_dir>/audit/label_issues.csv",
                       description="Find likely label errors: K folds of the prepared data each trained as a Ray "
                                   "Train run (a Ray Tune grid; starts Ray), their out-of-fold predictions scored by "
                                   "cleanlab. Writes <output_dir>/audit/label_issues.csv to review; the reviewed "
                                   "file, given as data.label_fixes, relabels and drops rows in `prepare`.")
    _config_args(p)
    p.add_argument("--folds", type=_at_least(2), default=5, help="cross-validation folds (default 5)")
    p.set_defaults(fn=cmd_audit)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="ONNX Runtime export (fused fp32, optional int8) with parity checks",
                       description="Export a fine-tuned classifier to ONNX Runtime (fused fp32, optionally dynamic "
                                   "int8), check that it agrees with the PyTorch model, and write model.onnx, the "
                                   "tokenizer and export_report.json to OUT_DIR. No Ray.")
    p.add_argument("model_dir", help="a fine-tuned HF classifier folder, e.g. <output_dir>/best")
    p.add_argument("out_dir", help="where model.onnx, model.int8.onnx, the tokenizer and export_report.json go")
    p.add_argument("--quantize", choices=["int8"], default=None, help="also write a dynamic-int8 model.int8.onnx")
    p.add_argument("--check", default=None, metavar="DATA",
                   help="labelled texts for agreement/accuracy: a corpus file (text/label) or a prepared split "
                        "folder such as <output_dir>/data/eval")
    p.add_argument("--max-length", type=int, default=None,
                   help="longest input in tokens (default: the length the model was trained at, as best/ records it; "
                        "else the model's)")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="torch.onnx exporter (torchscript: the graph ONNX Runtime's fusions match)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for the checks (torch and ORT)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the checkpoint")
    p.set_defaults(fn=cmd_export)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP on Ray Serve (batched; blocks until Ctrl-C)",
                       description="Serve a fine-tuned model over HTTP on Ray Serve. A classifier (a best/ folder "
                                   "or an export): POST /v1/classify and Hugging Face's text-classification route. "
                                   "A causal LM (a task: sft best/, or a base model with --adapter NAME=DIR "
                                   "repeated): OpenAI's POST /v1/chat/completions and /v1/completions (streaming "
                                   "too), one `model` per adapter. Both: GET /v1/models, /healthz, /readyz, "
                                   "OpenAPI at /docs. Starts Ray (or joins --address), batches requests across "
                                   "clients, sheds load with 503 + Retry-After; blocks until Ctrl-C.")
    p.add_argument("model_dir", help="a classifier's `best/` folder (--backend torch) or `domainft export` folder "
                                     "(--backend onnx); or a causal LM's folder (--backend transformers or vllm)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=_positive, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--backend", choices=["torch", "onnx", "transformers", "vllm"], default=None,
                   help="classifiers: torch (default) or onnx; causal LMs: transformers (default) or vllm (a GPU)")
    p.add_argument("--variant", choices=["fp32", "int8"], default="fp32", help="ONNX model: fp32 (default) or int8")
    p.add_argument("--max-length", type=_positive, default=None,
                   help="classifiers: truncate texts to this many tokens (default: the length the model was trained "
                        "at, as best/ records it; else the model's)")
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
    p.add_argument("--replica-gpus", type=float, default=None, help="GPUs reserved per replica (default 0)")
    p.add_argument("--adapter", action="append", default=None, metavar="NAME=DIR",
                   help="causal LMs: serve a LoRA adapter on the base MODEL_DIR as model NAME (repeat for more)")
    p.add_argument("--served-model-name", default=None,
                   help="causal LMs: the model id of MODEL_DIR (default: its last two path parts)")
    p.add_argument("--chat-template", default=None,
                   help="causal LMs: auto (the tokenizer's own, the default) or chatml, llama3, deepseek, mistral, "
                        "alpaca")
    p.add_argument("--max-tokens", type=_positive, default=None,
                   help="causal LMs: most tokens one request may generate, and the default (512)")
    p.add_argument("--max-model-len", type=_positive, default=None,
                   help="causal LMs: longest prompt plus answer in tokens (default: the model's positions)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting a local one")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow model code shipped with the checkpoint")
    p.set_defaults(fn=cmd_serve)


def _add_generate(sub) -> None:
    from domainft.data.chat_templates import FALLBACK_TEMPLATES  # names only: a module of strings

    p = sub.add_parser("generate", help="answer a file of chat prompts with a causal LM (Ray Data); score them "
                                        "against reference answers when the records have them",
                       description="Answer a file of chat prompts with a fine-tuned causal LM (a task: sft best/ "
                                   "folder) on Ray Data: starts Ray (or joins RAY_ADDRESS), one actor per GPU "
                                   "(else CPU actors), each loading the model once. Records are JSONL or Parquet in "
                                   "any chat format (messages, alpaca, sharegpt, prompt/completion); a final "
                                   "assistant turn is the reference answer and is left out of the prompt. Prompts "
                                   "are rendered with the model's chat template. Writes one JSON line per record "
                                   "(line, messages, answer, reference) in input order and, with references, the "
                                   "exact match / token F1 / ROUGE-L means to a .metrics.json beside it.")
    p.add_argument("model_dir", help="a causal LM folder (config.json, weights, tokenizer), e.g. <output_dir>/best")
    p.add_argument("--prompts", required=True, metavar="FILE",
                   help="JSONL or Parquet records of conversations; each ends with a user turn, or with an "
                        "assistant turn that is the reference answer")
    p.add_argument("--out", default=None,
                   help="answers file (default: FILE with .answers.jsonl for its extension; the scores go to "
                        ".metrics.json and skipped records to .rejects.jsonl beside it)")
    p.add_argument("--max-new-tokens", type=_positive, default=256, help="most tokens per answer (default 256)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature; 0 (default): greedy, the same answers every run")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling (default 1.0: all)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling (answers repeat with the same seed)")
    p.add_argument("--batch-size", type=_positive, default=8, help="prompts per forward pass (default 8)")
    p.add_argument("--num-actors", type=_positive, default=None,
                   help="model copies (default: one per GPU in the cluster, or one using every CPU)")
    p.add_argument("--chat-template", choices=["auto", *FALLBACK_TEMPLATES], default="auto",
                   help="auto (default): the tokenizer's own template; or a named one for a tokenizer without one")
    p.add_argument("--on-bad-record", choices=["error", "skip"], default="error",
                   help="a record that cannot be read: error (default) names its line and stops; skip writes it "
                        "to <out>.rejects.jsonl and goes on")
    p.set_defaults(fn=cmd_generate)


def _add_tools(sub) -> None:
    tasks = typing.get_args(Config.model_fields["task"].annotation)  # the schema's names: no task code imported
    p = sub.add_parser("init", help="write a commented starter config for your corpus (no Ray)",
                       description="Write a commented starter config for your corpus: the format, the text and "
                                   "label columns and the labels are guessed from its first rows (lines marked "
                                   "CHECK), then the settings people change first, at their defaults. No Ray; "
                                   "writes only --out.")
    p.add_argument("--data", required=True, help="your corpus: a file, a folder or a glob (as data.train takes)")
    p.add_argument("--out", default="run.yaml", help="the config file to write (default: run.yaml)")
    p.add_argument("--model", default=None,
                   help="model.name_or_path (default: bert-base-uncased, or bert-base-chinese for Chinese texts; "
                        "Qwen/Qwen2.5-0.5B-Instruct for chat records)")
    p.add_argument("--task", choices=tasks, default=None,
                   help="the task (default: sft when the records are chat conversations, else classification)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(fn=cmd_init)
    p = sub.add_parser("k8s-validate", help="validate KubeRay manifests against the CRD schemas",
                       description="Validate KubeRay manifests against the CRD schemas, and the domainft command "
                                   "each RayJob runs against this CLI. Kustomizations are rendered with "
                                   "`kubectl kustomize` first, so kubectl must be on PATH when there are any. "
                                   "No cluster is contacted. Exit 1 when a manifest has a problem.")
    p.add_argument("path", nargs="?", default="k8s", help="folder of manifests (default: k8s)")
    p.set_defaults(fn=cmd_k8s_validate)
    p = sub.add_parser("setup-wordnet", help="build NLTK WordNet from Debian's wordnet-base (offline)",
                       description="Build the NLTK WordNet corpus that English synonym augmentation reads, from "
                                   "the files of Debian's wordnet-base package (apt install wordnet-base "
                                   "wordnet-sense-index), with no download. No Ray. `make setup` does the same.")
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
