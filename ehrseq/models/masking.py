"""BERT-style masking of code tokens for BEHRT pretraining (masked-code modelling).

Of the eligible tokens (real, non-special codes: id >= N_SPECIAL and attention_mask == 1) each is selected
with probability ``prob``. A selected token becomes, with probability

    0.8   [MASK]
    0.1   a random non-special code id, uniform on [N_SPECIAL, vocab_size)
    0.1   itself (unchanged)

and its label is the original id. Every other position gets label -100, the ``ignore_index`` of the loss.
PAD, UNK, MASK, CLS and SEP are never selected: predicting a structural token or "unknown" teaches nothing.
"""

from __future__ import annotations

import torch

from ehrseq.data.batch import MASK_ID, SPECIAL_TOKENS

N_SPECIAL = len(SPECIAL_TOKENS)  # ids 0..4 are special; real codes start at 5
IGNORE_INDEX = -100


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
        generator: the source of randomness; the same generator state gives the same masks. Its device
            must match ``code_ids``'s device (or be CPU with CPU ids). None uses torch's global RNG.
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
    eligible = (code_ids >= N_SPECIAL) & attention_mask.bool()  # (B, L)
    # Three draws, always all of them and in this order, so the result depends only on the generator state.
    u_select = torch.rand(code_ids.shape, generator=generator, device=device)  # (B, L) in [0, 1)
    u_action = torch.rand(code_ids.shape, generator=generator, device=device)  # (B, L)
    random_ids = torch.randint(N_SPECIAL, vocab_size, code_ids.shape, generator=generator, device=device)

    selected = eligible & (u_select < prob)
    to_mask = selected & (u_action < 0.8)
    to_random = selected & (u_action >= 0.8) & (u_action < 0.9)
    # the remaining selected 10% keep their own id but are still predicted

    masked_ids = code_ids.clone()
    masked_ids[to_mask] = MASK_ID
    masked_ids[to_random] = random_ids[to_random]
    labels = torch.where(selected, code_ids, torch.full_like(code_ids, IGNORE_INDEX))
    return masked_ids, labels
