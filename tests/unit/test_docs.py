"""The docs a newcomer reads stay real: every `domainft <command>` they name exists, every dotted config key
they name in backticks is a key of the schema, every relative link (and its #anchor) resolves, and the README
stays short. Over README.md and docs/*.md; no Ray."""
import argparse
import re
from pathlib import Path

import pytest

from domainft.cli import build_parser
from domainft.config.load import _known_keys
from domainft.config.schema import Config

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_CHARS = 12_000

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)
# `domainft <word>` where domainft starts a command (not `domainft.export`, not `src/domainft`)
COMMAND = re.compile(r"(?<![\w./-])domainft[ \t]+([a-z][a-z0-9_-]*)")
# a dotted name not inside a path or a module (`k8s/base/configs/train.yaml`, `domainft.data.head`)
DOTTED = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)+)")
FILE_EXTS = {"yaml", "yml", "json", "jsonl", "csv", "tsv", "txt", "py", "md", "parquet", "png", "onnx",
             "safetensors", "pt", "bin", "log", "sh", "gz", "whl"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _fences(text: str) -> list[str]:
    return [m.group(0) for m in FENCE.finditer(text)]


def _inline_spans(text: str) -> list[str]:
    return [m.group(2) for m in INLINE.finditer(FENCE.sub("", text))]


def subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def command_problems(text: str, known: set[str]) -> list[str]:
    """`domainft <word>` in code (inline spans and fenced blocks) whose word is no subcommand."""
    named = [w for code in _inline_spans(text) + _fences(text) for w in COMMAND.findall(code)]
    return sorted({f"domainft {w}: no such command" for w in named if w not in known})


def key_problems(text: str, known: set[str], sections: set[str]) -> list[str]:
    """Dotted names in inline code whose first part is a config section (`optim.lr`, `data.replay.from`, also
    in `optim.lr=3e-5`, `data.replay: {...}` or `lr * optim.layer_decay ** d`) that are no config key."""
    bad = set()
    for span in _inline_spans(text):
        for m in DOTTED.finditer(span):
            if span[m.end():m.end() + 1] == "(":  # a call: `deepspeed.initialize()`
                continue
            name = m.group(1).rstrip(".")
            parts = name.split(".")
            if parts[0] not in sections or parts[-1] in FILE_EXTS:
                continue
            if name not in known:
                bad.add(f"{name}: not a config key")
    return sorted(bad)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", _text(page))
    seen: dict[str, int] = {}
    out = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def link_problems(page: Path, text: str) -> list[str]:
    """Relative links to files that do not exist, or to a #anchor a Markdown page does not have."""
    bad = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: {path or page.name} has no heading for #{anchor}")
    return bad


@pytest.fixture(scope="module")
def config_names():
    return set(_known_keys(Config)), set(Config.model_fields) | {f.alias for f in Config.model_fields.values()
                                                                  if f.alias}


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    assert {"README.md", "data.md", "config.md", "training.md", "peft.md", "export-and-serving.md",
            "data-quality.md", "cluster.md", "troubleshooting.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_named_is_a_real_subcommand(page):
    assert command_problems(_text(page), subcommands()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_key_named_is_a_real_key(page, config_names):
    assert key_problems(_text(page), *config_names) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert link_problems(page, _text(page)) == []


def test_readme_is_short():
    size = len(_text(ROOT / "README.md"))
    assert size < README_MAX_CHARS, f"README.md has {size} characters: move detail to docs/"


def test_docs_index_links_every_page():
    index = _text(ROOT / "docs" / "README.md")
    missing = [p.name for p in PAGES if p.parent.name == "docs" and p.name != "README.md" and f"({p.name})" not in index]
    assert missing == []


def test_the_checks_catch_made_up_names(config_names, tmp_path):
    known = subcommands()
    text = ("Run `domainft fly run.yaml` and set `optim.lrr=1e-4`, `data.replay: {from: x}`.\n\n"
            "```bash\ndomainft train run.yaml\ndomainft prepar run.yaml\n```\n"
            "Not commands or keys: `domainft.export.OnnxClassifier`, `src/domainft`, `run.yaml`, `model.onnx`, "
            "`space.optim.lrr`, `k8s/base/configs/train.yaml`, domainft fly in prose.\n")
    assert command_problems(text, known) == ["domainft fly: no such command", "domainft prepar: no such command"]
    assert key_problems(text, *config_names) == ["optim.lrr: not a config key"]
    assert key_problems("`unfreeze.every_epochs: 0`, `optim.lr * optim.layer_decay ** d`, `data.replay.from`, "
                        "`deepspeed.initialize()`",
                        *config_names) == []
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## How it works\n")
    text = "[a](other.md#how-it-works) [b](missing.md) [c](other.md#nope) [d](https://example.com/x.md) [e](#top)\n# Top\n"
    page.write_text(text)
    assert link_problems(page, text) == ["missing.md: no such file", "other.md#nope: other.md has no heading for #nope"]
