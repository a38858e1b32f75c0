"""Build the SFT demo's instruction data from BBC News (data/bbc_demo.jsonl, made by `make setup`).

Two kinds of instruction, in OpenAI `messages` format with one short system prompt:

  headline   "Write a headline for this news article." + the first --words words of the body
             -> the article's real headline (the first line of each BBC text)
  section    "Which section of the BBC does this article belong to? Answer with one word." + the same
             excerpt -> the label, capitalised (Business, Entertainment, Politics, Sports, Tech)

Each article is used once, by one kind (half of the articles of each section per kind), so nothing in
eval.jsonl or prompts.jsonl shares an article or a headline with train.jsonl. Articles whose headline
repeats (the corpus holds 34 such) are kept once. The draw is seeded and stratified by section, so every
file has the same share of each section; eval and prompts alternate the two kinds (eval.generate_samples
takes the first eval rows, so its samples hold both).

Writes data/sft_demo/ (or --out):
  train.jsonl    --train records (system, user, assistant)
  eval.jsonl     --eval held-out records, the same shape (data.eval of configs/smollm2_sft.yaml)
  prompts.jsonl  --prompts other held-out records for `domainft generate`: the system and user turn, and
                 the reference answer as the last assistant turn (generate takes it off and scores it)

  python scripts/build_sft_demo.py                # 300 train / 40 eval / 40 prompts, 45 words, seed 42
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are an editor at BBC News. Answer briefly."
ASK = {
    "headline": "Write a headline for this news article.",
    "section": "Which section of the BBC does this article belong to? Answer with one word.",
}


def read_articles(path: Path) -> list[dict]:
    """{"id", "label", "headline", "body"} per BBC text, the first of each repeated headline only."""
    seen, out = set(), []
    for line in open(path, encoding="utf-8"):
        if not line.strip():
            continue
        row = json.loads(line)
        headline, _, body = row["text"].strip().partition("\n")
        headline, body = " ".join(headline.split()), " ".join(body.split())
        if not headline or not body or headline.casefold() in seen:
            continue
        seen.add(headline.casefold())
        out.append({"id": row["id"], "label": row["label"], "headline": headline, "body": body})
    return out


def excerpt(body: str, words: int) -> str:
    """The first `words` words of the body, with "..." when it goes on."""
    parts = body.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def record(article: dict, kind: str, words: int) -> dict:
    answer = article["headline"] if kind == "headline" else article["label"].capitalize()
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f"{ASK[kind]}\n\n{excerpt(article['body'], words)}"},
                         {"role": "assistant", "content": answer}],
            "kind": kind, "source": f"bbc/{article['id']}"}  # extra keys: domainft reads only `messages`


def split(articles: list[dict], sizes: dict[str, int], seed: int) -> dict[str, list[dict]]:
    """Articles for each file, drawn per section with `seed`: the same number of each section per file, the
    files in the order of `sizes` (each takes the next articles of every section's shuffled list)."""
    by_label: dict[str, list[dict]] = {}
    for a in sorted(articles, key=lambda a: a["id"]):
        by_label.setdefault(a["label"], []).append(a)
    rng = random.Random(seed)
    for group in by_label.values():
        rng.shuffle(group)
    labels = sorted(by_label)
    out: dict[str, list[dict]] = {name: [] for name in sizes}
    start = 0
    for name, size in sizes.items():
        per = -(-size // len(labels))
        for i, label in enumerate(labels):
            out[name] += by_label[label][start:start + per]
        start += per
        if any(len(by_label[label]) < start for label in labels):
            raise SystemExit(f"not enough articles for {sizes}: {min(map(len, by_label.values()))} in a section")
    # one section after another would put a whole section first: interleave them (round robin), then cut
    for name, size in sizes.items():
        rows = out[name]
        per = len(rows) // len(labels)
        out[name] = [rows[k * per + j] for j in range(per) for k in range(len(labels))][:size]
    return out


def with_kinds(articles: list[dict], words: int) -> list[dict]:
    """Alternate the two kinds over the (section-interleaved) articles: headline, section, headline, ..."""
    kinds = list(ASK)
    # The number of sections (5) is odd, so alternating by position gives each section both kinds.
    return [record(a, kinds[i % len(kinds)], words) for i, a in enumerate(articles)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(ROOT / "data" / "bbc_demo.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "data" / "sft_demo"))
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--eval", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--words", type=int, default=45, help="words of the article body in each prompt")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    source = Path(a.source)
    if not source.is_file():
        sys.exit(f"{source}: no such file (run `make setup`)")
    # held-out files first: they stay the same articles whatever --train is
    parts = split(read_articles(source), {"eval": a.eval, "prompts": a.prompts, "train": a.train}, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "eval", "prompts"):
        rows = with_kinds(parts[name], a.words)
        if name == "train":  # the kinds and sections mixed through the file, not in blocks
            random.Random(a.seed).shuffle(rows)
        path = out / f"{name}.jsonl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(path)
        kinds = {k: sum(r["kind"] == k for r in rows) for k in ASK}
        print(f"{path}: {len(rows)} records ({kinds['headline']} headline, {kinds['section']} section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
