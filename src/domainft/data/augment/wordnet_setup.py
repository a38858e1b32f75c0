"""Find or build NLTK WordNet data offline.

NLTK cannot read Debian's /usr/share/wordnet in place: the files are copied into an
NLTK data folder (symlinks are refused as "escaping root") and the missing `lexnames`
file is generated from the WordNet man page.
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import re
import shutil
from pathlib import Path
from typing import Optional

DEBIAN_WORDNET = Path("/usr/share/wordnet")
DEBIAN_LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
WORDNET_FILES = [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("adj", "adv", "noun", "verb")] + [
    f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")] + [
    "index.sense", "cntlist", "cntlist.rev", "frames.vrb", "sentidx.vrb", "sents.vrb"]
HOW_TO_GET = (
    "English synonyms need WordNet for NLTK. Either run `domainft setup-wordnet` after "
    "`apt-get install wordnet-base wordnet-sense-index` (offline, Debian), or "
    "`python -m nltk.downloader wordnet` where the network allows, or set NLTK_DATA to a folder "
    "holding corpora/wordnet.")


def default_data_dir() -> Path:
    """Where domainft keeps its NLTK data: $DOMAINFT_NLTK_DATA, else ~/.cache/domainft/nltk_data."""
    env = os.environ.get("DOMAINFT_NLTK_DATA")
    return Path(env) if env else Path.home() / ".cache" / "domainft" / "nltk_data"


def _has_wordnet(root: Path) -> bool:
    d = root / "corpora" / "wordnet"
    return (d / "data.noun").is_file() and (d / "lexnames").is_file() or (root / "corpora" / "wordnet.zip").is_file()


def find_wordnet_root() -> Optional[Path]:
    """An NLTK data folder holding WordNet: domainft's own first, then NLTK's standard search path."""
    candidates = [default_data_dir()]
    try:
        import nltk

        candidates += [Path(p) for p in nltk.data.path]
    except ImportError:
        pass
    for root in candidates:
        if _has_wordnet(root):
            return root
    return None


def _lexnames_lines(man_page: Path) -> list[str]:
    lines = []
    for raw in gzip.open(man_page, "rt", encoding="utf-8", errors="replace"):
        m = re.match(r"^(\d\d)\t([^\t]+)", raw)
        if not m:
            continue
        num, name = m.group(1), m.group(2).replace(" ", "").strip()
        pos = name.split(".")[0]
        code = {"noun": 1, "verb": 2, "adj": 3}.get(pos, 4)
        lines.append(f"{num}\t{name}\t{code}")
    return lines


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on `path` (created), so that parallel workers build a shared file once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_wordnet(dest: Optional[Path] = None, source: Path = DEBIAN_WORDNET) -> Path:
    """Copy Debian's WordNet 3.0 into `dest/corpora/wordnet` and generate `lexnames`. Returns dest.

    `lexnames` is written last, so a reader that sees it (`find_wordnet_root`) sees every file.
    """
    dest = Path(dest) if dest else default_data_dir()
    missing = [f for f in WORDNET_FILES if not (source / f).is_file()]
    if missing or not DEBIAN_LEXNAMES_MAN.is_file():
        raise FileNotFoundError(f"Debian WordNet files not found under {source} ({', '.join(missing[:3])}...). "
                                + HOW_TO_GET)
    with file_lock(dest / ".wordnet.lock"):
        _copy_wordnet(dest, source)
    return dest


def _copy_wordnet(dest: Path, source: Path) -> None:
    target = dest / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for f in WORDNET_FILES:
        shutil.copyfile(source / f, target / f)
    lex = _lexnames_lines(DEBIAN_LEXNAMES_MAN)
    if len(lex) < 40:
        raise RuntimeError(f"could not read lexnames from {DEBIAN_LEXNAMES_MAN} ({len(lex)} entries)")
    # WordNet 3.0 licence travels with the data.
    lic = Path("/usr/share/doc/wordnet-base/copyright")
    if lic.is_file():
        shutil.copyfile(lic, target / "LICENSE")
    tmp = target / "lexnames.tmp"
    tmp.write_text("\n".join(lex) + "\n", encoding="utf-8")
    os.replace(tmp, target / "lexnames")


def debian_wordnet_available(source: Path = DEBIAN_WORDNET) -> bool:
    """True when Debian's wordnet-base files (and the lexnames man page) are installed."""
    return all((source / f).is_file() for f in WORDNET_FILES) and DEBIAN_LEXNAMES_MAN.is_file()


def ensure_wordnet_on_path(build: bool = True) -> Path:
    """Put a WordNet-holding folder on nltk.data.path, or raise with how to get one.

    Order: domainft's own folder, then NLTK's standard search path (a user who ran
    `nltk.download('wordnet')`), then, with `build`, a fresh copy of Debian's files.
    """
    import nltk

    root = find_wordnet_root()
    if root is None and build and debian_wordnet_available():
        root = build_wordnet()
    if root is None:
        raise RuntimeError("NLTK WordNet data not found. " + HOW_TO_GET)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root
