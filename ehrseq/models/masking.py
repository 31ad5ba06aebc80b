"""BERT-style masking of code tokens for BEHRT pretraining (masked-code modelling).

Of the eligible tokens (real, non-special codes: id >= N_SPECIAL and attention_mask == 1) each is selected
with probability ``prob``. A selected token becomes, with probability

    0.8   [MASK]
    0.1   a random non-special code id, uniform on [N_SPECIAL, vocab_size)
    0.1   itself (unchanged)

and its label is the original id. Every other position gets label -100, the ``ignore_index`` of the loss.
PAD, UNK, MASK, CLS and SEP are never selected: predicting a structural token or "unknown" teaches nothing.

:func:`fixed_mask_codes` draws the same masks for a sequence every time it is called (a generator per row,
seeded by the run's seed and the row's key): pretraining scores its tuning loss on those, so early stopping
compares epochs on the same masked positions rather than on fresh random ones.
"""

from __future__ import annotations

import numpy as np
import torch

from ehrseq.data.batch import MASK_ID, SPECIAL_TOKENS

N_SPECIAL = len(SPECIAL_TOKENS)  # ids 0..4 are special; real codes start at 5
IGNORE_INDEX = -100
_U64 = (1 << 64) - 1


def mask_codes(
    code_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    generator: torch.Generator | None = None,
    prob: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask code tokens the BERT 80/10/10 way.

    Args:
        code_ids: (B, L) int64 token ids.
        attention_mask: (B, L) 1 for real tokens, 0 for padding.
        vocab_size: size of the code vocabulary (special tokens included); random replacements are drawn
            from [N_SPECIAL, vocab_size).
        generator: the source of randomness; the same generator state gives the same masks. The draws are
            made on the generator's device and moved to ``code_ids``'s, so a CPU generator gives the same masks
            whether the batch is on the CPU or a GPU. None uses torch's global RNG.
        prob: chance that an eligible token is selected.

    Returns:
        masked_ids: (B, L) int64, a copy of ``code_ids`` with the selected tokens replaced.
        labels: (B, L) int64, the original id at selected positions and -100 elsewhere.
    """
    if vocab_size <= N_SPECIAL:
        raise ValueError(f"vocab_size must exceed the {N_SPECIAL} special tokens, got {vocab_size}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    device = code_ids.device
    draw = generator.device if generator is not None else device
    eligible = (code_ids >= N_SPECIAL) & attention_mask.bool()  # (B, L)
    # Three draws, always all of them and in this order, so the result depends only on the generator state.
    u_select = torch.rand(code_ids.shape, generator=generator, device=draw).to(device)  # (B, L) in [0, 1)
    u_action = torch.rand(code_ids.shape, generator=generator, device=draw).to(device)  # (B, L)
    random_ids = torch.randint(N_SPECIAL, vocab_size, code_ids.shape, generator=generator, device=draw).to(device)

    selected = eligible & (u_select < prob)
    to_mask = selected & (u_action < 0.8)
    to_random = selected & (u_action >= 0.8) & (u_action < 0.9)
    # the remaining selected 10% keep their own id but are still predicted

    masked_ids = code_ids.clone()
    masked_ids[to_mask] = MASK_ID
    masked_ids[to_random] = random_ids[to_random]
    labels = torch.where(selected, code_ids, torch.full_like(code_ids, IGNORE_INDEX))
    return masked_ids, labels


def _row_seed(seed: int, key: int) -> int:
    """A 64-bit torch seed from (seed, key) that does not collide for neighbouring seeds or keys."""
    state = np.random.SeedSequence([int(seed) & _U64, int(key) & _U64]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def fixed_mask_codes(
    code_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    keys: torch.Tensor,
    *,
    seed: int,
    prob: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mask_codes` with masks fixed per row: row ``r`` is masked with a generator seeded by
    ``(seed, keys[r])`` over its real tokens only, so a sequence gets the same masks in every call whatever
    batch, position or padding it comes with. For a held-out (tuning) loss that is compared across epochs.

    Args:
        code_ids, attention_mask: (B, L) as for :func:`mask_codes`.
        keys: (B,) int64 identity of each row's sequence (e.g. subject_id when each subject has one).
        seed: the run's seed.

    Returns:
        masked_ids, labels: (B, L) int64, as :func:`mask_codes` returns them.
    """
    if keys.shape[0] != code_ids.shape[0]:
        raise ValueError(f"keys has {keys.shape[0]} rows, code_ids {code_ids.shape[0]}")
    masked_ids = code_ids.clone()
    labels = torch.full_like(code_ids, IGNORE_INDEX)
    real = attention_mask.bool()
    for r in range(code_ids.shape[0]):
        pos = real[r]
        ids = code_ids[r][pos].to("cpu")[None]
        g = torch.Generator().manual_seed(_row_seed(seed, int(keys[r])))
        m, lab = mask_codes(ids, torch.ones_like(ids), vocab_size, g, prob=prob)
        masked_ids[r, pos] = m[0].to(code_ids.device)
        labels[r, pos] = lab[0].to(code_ids.device)
    return masked_ids, labels
