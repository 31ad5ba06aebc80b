"""Token attributions for :class:`~ehrseq.models.text_classifier.TextClassifier` by integrated gradients.

For one report and one label, integrated gradients (Sundararajan et al., 2017) over the input word
embeddings of the window that decides the label (the window with the largest logit, since windows are
max-pooled)::

    score_t = sum_h (x_th - x0_th) * mean_{a in (0, 1]} d logit(x0 + a (x - x0)) / d x_th

with the all-[PAD] embedding as baseline ``x0`` (special tokens kept). The scores add up to roughly
``logit(x) - logit(x0)``; ``steps`` trades accuracy of that sum against time. For an ensemble the function is
the members' mean logit on the window where that mean is largest, and the scores are the members' averaged.

Caution: attributions show which tokens moved *this model's* logit; they are not proof that the model is
right, nor that it reasons as a pathologist would. A plausible-looking attribution can accompany a wrong
prediction, and attributions of small models trained on synthetic text are noisy. Use them to audit and to
find failure modes, never to justify a clinical decision.
"""

from __future__ import annotations

import numpy as np
import torch

from ehrseq.featurize.text import check_texts
from ehrseq.models.text_classifier import TextClassifier, _pad


def integrated_gradients(
    model: TextClassifier, text: str, label: str, *, steps: int = 32
) -> tuple[list[str], np.ndarray]:
    """Attribute ``label``'s logit for one report to its tokens.

    Returns ``(tokens, scores)``: the tokens of the deciding window (length L, special tokens included) and
    (L,) float scores; positive scores push the label towards 1.
    """
    model._check_fitted()
    (text,) = check_texts([text])
    if label not in model.config.labels:
        raise ValueError(f"unknown label '{label}'; expected one of {list(model.config.labels)}")
    k = model.config.labels.index(label)
    tok = model.tokenizer_
    nets = model.nets_
    w = model.windows([text])
    ids, att = _pad(w.ids, tok.pad_token_id)  # (W, L)
    with torch.no_grad():  # deciding window: the largest logit, averaged over ensemble members
        mean_logit = torch.stack([net.eval()(input_ids=ids, attention_mask=att).logits[:, k] for net in nets]).mean(0)
    j = int(mean_logit.argmax())
    ids, att = ids[j : j + 1], att[j : j + 1]
    n = int(att.sum())
    ids, att = ids[:, :n], att[:, :n]
    special = torch.isin(ids, torch.tensor(sorted(set(tok.all_special_ids))))
    base_ids = torch.where(special, ids, torch.full_like(ids, tok.pad_token_id))
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint rule on (0, 1)
    # integrated gradients are linear in the function: the ensemble's scores are its members' scores averaged
    scores = torch.zeros(n)
    for net in nets:
        embed = net.encoder.get_input_embeddings()
        with torch.no_grad():
            x, x0 = embed(ids), embed(base_ids)  # (1, L, H)
        path = x0 + alphas.view(-1, 1, 1) * (x - x0)  # (steps, L, H)
        path.requires_grad_(True)
        logits = net(inputs_embeds=path, attention_mask=att.expand(steps, -1)).logits[:, k]
        (grads,) = torch.autograd.grad(logits.sum(), path)
        scores += ((x - x0) * grads.mean(0, keepdim=True)).sum(-1)[0].detach() / len(nets)  # (L,)
    tokens = tok.convert_ids_to_tokens(ids[0].tolist())
    return tokens, scores.numpy().astype(np.float64)
