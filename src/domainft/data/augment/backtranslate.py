"""Back-translation with protected terms masked: text -> pivot language -> text.

Protected spans are replaced by placeholders (`protect.mask`) before translation and restored
after; an output that lost, repeated or invented a placeholder is dropped. Texts are translated
line by line (paragraphs of a news article, say), so that line breaks survive and long documents
do not overflow a model's length limit. Identical lines in a batch are translated once.

Backends are callables `list[str] -> list[str]` doing the whole round trip:
- `ApertiumRoundTrip`: the offline rule-based `apertium` program (Debian apertium-eng-<pivot>);
- `Seq2SeqRoundTrip`: two transformers seq2seq models (MarianMT or any AutoModelForSeq2SeqLM),
  batched, sorted by length to limit padding.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections import Counter
from typing import Callable, Optional, Sequence

from domainft.data.augment.protect import ProtectedMatcher, mask, unmask
from domainft.errors import UserError

RoundTrip = Callable[[list[str]], list[str]]

LOST_PLACEHOLDER = "lost_placeholder"
PROTECTED_CHANGED = "protected_term_changed"
PROTECTED_ADDED = "protected_term_added"
EMPTY = "empty_translation"
FAILED = "translation_failed"
COLLISION = "placeholder_collision"

_LINE_BREAKS = re.compile(r"([\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+)")
_SPACES = re.compile(r"[ \t]{2,}")


def protected_drift(matcher: ProtectedMatcher, before: str, after: str,
                    before_terms: Optional[Counter] = None) -> str:
    """"" when `after` holds exactly the protected strings of `before`; else the drop reason:
    protected_term_added (only new ones appeared, e.g. a translation left a glued Spanish word
    such as "basadoenLondres", which reads as a code) or protected_term_changed."""
    old = matcher.terms_in(before) if before_terms is None else before_terms
    new = matcher.terms_in(after)
    if new == old:
        return ""
    return PROTECTED_ADDED if not (old - new) else PROTECTED_CHANGED


def _units(text: str) -> tuple[list[str], list]:
    """Split into translatable units (stripped non-empty lines) and a template to rebuild the text."""
    units: list[str] = []
    template: list = []
    for part in _LINE_BREAKS.split(text):
        if not part or _LINE_BREAKS.fullmatch(part) or not part.strip():
            template.append(part)
            continue
        lead = part[:len(part) - len(part.lstrip())]
        trail = part[len(part.rstrip()):]
        template.extend([lead, len(units), trail])
        units.append(part.strip())
    return units, template


def backtranslate_texts(texts: Sequence[str], matcher: ProtectedMatcher,
                        round_trip: RoundTrip) -> list[tuple[Optional[str], str]]:
    """Back-translate texts with their protected terms masked.

    Returns one (text or None, drop reason or "") per input. Reasons: lost_placeholder,
    protected_term_added, protected_term_changed, empty_translation, translation_failed,
    placeholder_collision.
    """
    prepared = []  # (originals, template, unit ids) or a failure reason
    unit_index: dict[str, int] = {}
    for text in texts:
        try:
            masked, originals = mask(text, matcher.spans(text))
        except ValueError:
            prepared.append(COLLISION)
            continue
        units, template = _units(masked)
        ids = [unit_index.setdefault(u, len(unit_index)) for u in units]
        prepared.append((originals, template, ids))
    unique = list(unit_index)
    translated = round_trip(unique) if unique else []
    # MT output sometimes doubles spaces; units hold no protected text (only placeholders).
    translated = [None if t is None else _SPACES.sub(" ", t) for t in translated]
    out: list[tuple[Optional[str], str]] = []
    for text, prep in zip(texts, prepared):
        if isinstance(prep, str):
            out.append((None, prep))
            continue
        originals, template, ids = prep
        pieces = [translated[ids[p]] if isinstance(p, int) else p for p in template]
        if any(p is None for p in pieces):
            out.append((None, FAILED))
            continue
        restored = unmask("".join(pieces), originals)
        if restored is None:
            out.append((None, LOST_PLACEHOLDER))
        elif not restored.strip():
            out.append((None, EMPTY))
        elif (reason := protected_drift(matcher, text, restored)):
            out.append((None, reason))
        else:
            out.append((restored, ""))
    return out


# --- Apertium ------------------------------------------------------------------------------------
class ApertiumRoundTrip:
    """`apertium -u eng-<pivot> | apertium -u <pivot>-eng`, one pipeline per call (start-up ~1 s).

    Lines in, lines out: if the program ever returns a different number of lines, the call is
    split in halves until the offending line is isolated (that line becomes None: translation_failed).
    """

    def __init__(self, pivot: str = "spa", source: str = "eng", timeout_s: float = 900.0):
        if shutil.which("apertium") is None:
            raise UserError("augment.backtranslation: the `apertium` program is not installed; on Debian/Ubuntu run "
                            f"`apt-get install --no-install-recommends apertium-{source}-{pivot}` (or use backend: marian)")
        pairs = subprocess.run(["apertium", "-l"], capture_output=True, text=True).stdout.split()
        for pair in (f"{source}-{pivot}", f"{pivot}-{source}"):
            if pair not in pairs:
                raise UserError(f"augment.backtranslation: Apertium pair {pair} is not installed (have: "
                                f"{', '.join(pairs) or 'none'}); install apertium-{source}-{pivot}")
        self.forward, self.backward = f"{source}-{pivot}", f"{pivot}-{source}"
        self.timeout_s = timeout_s

    def _run(self, lines: list[str]) -> Optional[list[str]]:
        fwd = subprocess.Popen(["apertium", "-u", self.forward], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        bwd = subprocess.Popen(["apertium", "-u", self.backward], stdin=fwd.stdout, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        fwd.stdout.close()  # so that bwd sees EOF when fwd exits
        feeder = threading.Thread(target=lambda: (fwd.stdin.write(("\n".join(lines) + "\n").encode("utf-8")),
                                                  fwd.stdin.close()), daemon=True)
        feeder.start()
        out, _ = bwd.communicate(timeout=self.timeout_s)
        feeder.join()
        fwd.wait(timeout=self.timeout_s)
        got = out.decode("utf-8", errors="replace").split("\n")
        if got and got[-1] == "":
            got.pop()
        if fwd.returncode != 0 or bwd.returncode != 0 or len(got) != len(lines):
            return None
        return [g.strip() for g in got]  # Apertium may add a leading space

    def __call__(self, lines: list[str]) -> list[Optional[str]]:
        if not lines:
            return []
        got = self._run(lines)
        if got is not None:
            return got
        if len(lines) == 1:
            return [None]
        mid = len(lines) // 2
        return self(lines[:mid]) + self(lines[mid:])


# --- transformers seq2seq (MarianMT) ---------------------------------------------------------------
class Seq2SeqTranslator:
    """One direction of translation with a transformers seq2seq model, batched and length-sorted."""

    def __init__(self, name_or_path: str, device: Optional[str] = None, batch_size: int = 32,
                 num_beams: int = 1, max_length: int = 512):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path).to(self.device).eval()
        # Never past what the model can embed (positions) or the tokenizer was made for.
        limits = [max_length, getattr(self.model.config, "max_position_embeddings", None) or max_length]
        if 0 < getattr(self.tokenizer, "model_max_length", 0) < 1_000_000:
            limits.append(self.tokenizer.model_max_length)
        self.batch_size, self.num_beams, self.max_length = batch_size, num_beams, min(limits)
        self.batches_run = 0  # for tests and logs: how many generate() calls were made

    def __call__(self, texts: list[str]) -> list[str]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[str] = [""] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(self.device)
            # Bound the output: an untrained or looping model would otherwise run to the model's limit.
            limit = min(self.max_length - 1, 2 * enc["input_ids"].shape[1] + 8)
            with self.torch.inference_mode():
                gen = self.model.generate(**enc, num_beams=self.num_beams, do_sample=False, max_new_tokens=limit)
            self.batches_run += 1
            for i, s in zip(idx, self.tokenizer.batch_decode(gen, skip_special_tokens=True)):
                out[i] = s.strip()
        return out


class Seq2SeqRoundTrip:
    """forward model then backward model."""

    def __init__(self, forward: str, backward: str, device: Optional[str] = None, batch_size: int = 32,
                 num_beams: int = 1):
        self.forward = Seq2SeqTranslator(forward, device, batch_size, num_beams)
        self.backward = self.forward if backward == forward else Seq2SeqTranslator(backward, device, batch_size,
                                                                                   num_beams)

    def __call__(self, lines: list[str]) -> list[str]:
        return self.backward(self.forward(lines)) if lines else []
