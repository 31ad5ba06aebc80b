"""WordPiece tokenizer trained on report text (fit on the training split only) and input checks for text.

The tokenizer is BERT-style, built with the ``tokenizers`` library: ``BertNormalizer`` (lower case, accents
stripped), ``BertPreTokenizer``, a WordPiece model with ``[PAD] [UNK] [CLS] [SEP] [MASK]`` and a
``[CLS] ... [SEP]`` template. It is saved with ``save_pretrained`` (``tokenizer.json`` + config; no pickles)
and reloads as a ``PreTrainedTokenizerFast``.

Why the vocabulary is learned here and not by ``tokenizers.trainers.WordPieceTrainer``: that trainer breaks
ties between equally frequent merges in hash-map order, so the same corpus gives a different vocabulary on
each call (measured with tokenizers 0.23: 3 calls, 3 vocabularies), and the same seed would not give the same
model. :func:`wordpiece_vocab` runs the same algorithm (BPE merges over words, ``##`` continuation pieces)
with ties broken by the pieces themselves; ``trainer="library"`` still selects the library's trainer.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ehrseq.errors import DataValidationError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def check_texts(texts: Iterable[object], ids: Sequence[object] | None = None, *, what: str = "report") -> list[str]:
    """Return ``texts`` as a list of str, or raise :class:`DataValidationError` naming the bad rows.

    A text is bad when it is not a ``str`` or is empty after stripping white space. The error names row
    positions and, when ``ids`` is given, their ids (e.g. report_id); it never quotes the text.
    """
    if isinstance(texts, str):
        raise DataValidationError(f"expected a sequence of {what} texts, got a single string", column="text",
                                  hint="wrap it in a list")
    out = list(texts)
    bad = [i for i, t in enumerate(out) if not isinstance(t, str) or not t.strip()]
    if bad:
        where = f"row(s) {bad[:5]}"
        if ids is not None:
            where += f", {what}_id(s) {[ids[i] for i in bad[:5]]}"
        raise DataValidationError(
            f"{len(bad)} {what}(s) are empty or not text at {where}",
            column="text",
            n_rows=len(bad),
            hint=f"drop these rows or fill in the {what} text before training or scoring",
        )
    return out


def texts_and_ids(data: pd.DataFrame | Iterable[object], id_column: str = "report_id") -> tuple[list[str], list]:
    """Validated texts and their ids (``id_column`` when ``data`` is a frame, else row positions)."""
    if isinstance(data, pd.DataFrame):
        if "text" not in data.columns:
            raise DataValidationError("missing required column", column="text")
        ids = data[id_column].tolist() if id_column in data.columns else list(range(len(data)))
        return check_texts(data["text"].tolist(), ids), ids
    texts = check_texts(data)
    return texts, list(range(len(texts)))


def train_wordpiece(
    texts: Iterable[object],
    *,
    vocab_size: int = 2000,
    min_frequency: int = 2,
    out_dir: str | Path | None = None,
    model_max_length: int = 512,
    trainer: str = "deterministic",
) -> PreTrainedTokenizerFast:
    """Train an uncased WordPiece tokenizer on ``texts``; save it to ``out_dir`` when given.

    ``vocab_size`` includes the five special tokens and the single characters seen in the corpus; merges seen
    fewer than ``min_frequency`` times are not learned. ``trainer="library"`` uses
    ``tokenizers.trainers.WordPieceTrainer`` (not reproducible, see the module docstring).
    """
    corpus = check_texts(texts)
    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if trainer == "deterministic":
        counts = Counter(
            w for t in corpus for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t))
        )
        vocab = {p: i for i, p in enumerate(wordpiece_vocab(counts, vocab_size, min_frequency))}
        tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
        tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    elif trainer == "library":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
        wp_trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=wp_trainer, length=len(corpus))
    else:
        raise ValueError("trainer must be 'deterministic' or 'library'")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def wordpiece_vocab(word_counts: dict[str, int], vocab_size: int, min_frequency: int = 2) -> list[str]:
    """WordPiece pieces learned by greedy pair merges, reproducibly.

    Words start as characters (``c``, then ``##c`` inside a word). Each step merges the adjacent pair with the
    highest corpus count (ties: the smallest pair of strings), until ``vocab_size`` pieces or no pair occurs
    ``min_frequency`` times. Returns special tokens, then the sorted alphabet (characters seen at least
    ``min_frequency`` times), then pieces in merge order: no piece occurs fewer than ``min_frequency`` times in
    the corpus, so a word seen once (a name, an identifier) never enters the vocabulary.
    """
    words = sorted(word_counts)
    freq = [word_counts[w] for w in words]
    segs = [[w[0]] + [f"##{c}" for c in w[1:]] for w in words]
    chars: Counter[str] = Counter()
    for s, f in zip(segs, freq):
        for p in s:
            chars[p] += f
    # a character seen fewer than min_frequency times is not a piece either (words holding it read as [UNK]); a
    # merge holds a string only as often as its rarest character, so no piece of a rare string is learned
    vocab = list(SPECIAL_TOKENS) + sorted({p for p, c in chars.items() if c >= min_frequency} - set(SPECIAL_TOKENS))
    seen = set(vocab)
    pair_count: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, s in enumerate(segs):
        for pair in zip(s, s[1:]):
            pair_count[pair] += freq[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale entry: the count changed after it was pushed
        if -neg < min_frequency:
            break
        merged = pair[0] + pair[1].removeprefix("##")
        if merged not in seen:
            seen.add(merged)
            vocab.append(merged)
        touched: Counter[tuple[str, str]] = Counter()
        for i in sorted(where.pop(pair, ())):
            old = segs[i]
            for p in zip(old, old[1:]):
                pair_count[p] -= freq[i]
                touched[p] += 1
            new, k = [], 0
            while k < len(old):
                if k + 1 < len(old) and (old[k], old[k + 1]) == pair:
                    new.append(merged)
                    k += 2
                else:
                    new.append(old[k])
                    k += 1
            segs[i] = new
            for p in zip(new, new[1:]):
                pair_count[p] += freq[i]
                where.setdefault(p, set()).add(i)
                touched[p] += 1
        pair_count.pop(pair, None)
        for p in sorted(touched):
            if pair_count.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_count[p], p))
    return vocab


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved with ``save_pretrained`` from a local directory (never the network)."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no tokenizer directory")
    return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
