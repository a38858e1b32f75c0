"""Two `domainft generate` answer files for the same prompts, side by side: a few prompts with the reference and
both answers, then exact match and token F1 before -> after, overall and per instruction (the first line of
the last user turn, e.g. "Write a headline for this news article.").

  python scripts/compare_answers.py BEFORE.answers.jsonl AFTER.answers.jsonl [--show 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def read(path: str) -> list[dict]:
    if not Path(path).is_file():
        sys.exit(f"{path}: no such file (`domainft generate MODEL --prompts FILE --out {path}` writes it)")
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def user_turn(row: dict) -> str:
    return next((m["content"] for m in reversed(row["messages"]) if m["role"] == "user"), "")


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def scores(rows: list[dict]) -> dict:
    from domainft.core.textmetrics import score_samples

    scored = [r for r in rows if r.get("reference") is not None]
    return score_samples([r["answer"] for r in scored], [r["reference"] for r in scored])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--show", type=int, default=3, help="prompts printed in full (the first ones of the file)")
    ap.add_argument("--width", type=int, default=100)
    a = ap.parse_args()
    before, after = read(a.before), read(a.after)
    if [r["line"] for r in before] != [r["line"] for r in after]:
        sys.exit(f"{a.before} and {a.after} answer different prompts (their `line` fields differ)")
    pad = " " * 13
    for b, f in list(zip(before, after))[:a.show]:
        print(f"prompt (line {b['line']}):")
        print(textwrap.fill(clip(user_turn(b), 3 * a.width), a.width, initial_indent=pad, subsequent_indent=pad))
        for name, text in (("reference", b.get("reference")), ("before", b["answer"]), ("after", f["answer"])):
            if text is not None:
                print(f"  {name:<10} {clip(text, a.width)}")
        print()
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(before):
        groups.setdefault(user_turn(r).strip().splitlines()[0] if user_turn(r).strip() else "", []).append(i)
    head = f"{'':<60} {'n':>4}  {'exact match':>16}  {'token F1':>16}"
    print(head)
    lines = [("all prompts", list(range(len(before))))] + ([(k, v) for k, v in groups.items()] if len(groups) > 1 else [])
    for name, idx in lines:
        sb, sa = scores([before[i] for i in idx]), scores([after[i] for i in idx])
        print(f"{clip(name, 60):<60} {len(idx):>4}  {sb['exact_match']:>6.3f} -> {sa['exact_match']:<6.3f}  "
              f"{sb['token_f1']:>6.3f} -> {sa['token_f1']:<6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
