"""Translation quality numbers from sacrebleu: corpus chrF and BLEU against references, exact
match, and the agreement of two answers to the same request (chrF of one against the other).

chrF is the headline number: it works on characters, so it stays meaningful for short
segments and for languages written without spaces (Chinese, Japanese), where word BLEU with
the default tokenizer sees one "word" per sentence.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF

_CHRF = CHRF()
# "flores200" is sacrebleu's language-independent SentencePiece tokenizer; it needs a model
# download, so "char" (character-level) stands in for it on CJK targets.
_CJK = ("zh", "ja", "ko")


@dataclass(frozen=True)
class Scores:
    segments: int
    chrf: float  # 0-100
    bleu: float  # 0-100
    exact: float  # share of hypotheses equal to their reference after stripping, 0-1


def corpus(hypotheses: Sequence[str], references: Sequence[str], target_lang: str = "") -> Scores:
    """Scores of `hypotheses` against one reference each. `target_lang` (a code) picks BLEU's
    tokenizer: characters for Chinese, Japanese and Korean, 13a otherwise."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        return Scores(0, 0.0, 0.0, 0.0)
    hyps = [h.strip() for h in hypotheses]
    refs = [r.strip() for r in references]
    bleu = BLEU(tokenize="char" if target_lang in _CJK else "13a", effective_order=True)
    return Scores(
        segments=len(hyps),
        chrf=round(_CHRF.corpus_score(hyps, [refs]).score, 2),
        bleu=round(bleu.corpus_score(hyps, [refs]).score, 2),
        exact=round(sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(hyps), 4),
    )


def agreement(answer: str, reference_answer: str) -> float:
    """How close one answer is to another, as sentence chrF (100: identical)."""
    a, b = answer.strip(), reference_answer.strip()
    if a == b:
        return 100.0
    return round(float(_CHRF.sentence_score(a, [b]).score), 2)
