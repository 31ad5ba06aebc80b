"""Multi-label biopsy-report classifier: a BERT-family encoder + one linear head (McMaster et al. 2021).

    windows = tokenizer(report, max_length, stride)        # a long report becomes W overlapping windows
    h_w     = masked-max(encoder(window))                  # (W, H); or masked-mean, [CLS], mean+max
    logit_w = Linear(dropout(h_w))                         # (W, K), one logit per label
    logit   = max over the report's windows of logit_w     # (K,)   never silent truncation
    p       = sigmoid(logit)                               # trained with binary cross-entropy per label

Offline by default: with ``pretrained=None`` a WordPiece tokenizer is trained on the training reports, a small
DistilBERT is initialised from scratch, pre-trained with masked-LM on the (unlabelled) training reports, then
fine-tuned with a share of the input tokens masked at random (augmentation). ``pretrained`` may name a local
directory (loaded with ``local_files_only=True``) or a hub model (which works only where a hub or its cache is
reachable). Per-label decision thresholds are chosen on the
tuning split (max F1 or Youden's J) and stored in the artifact with the weights (safetensors), the config and
the tokenizer. Both loops (masked-LM, fine-tuning) run on ehrseq's shared trainer (:func:`ehrseq.train.trainer.train`).

For use at another centre, ``fit(..., adapt_to=reports)`` (or :meth:`TextClassifier.adapt`) self-trains the
model on that centre's unlabelled reports: its own sharpened scores become soft targets next to the labelled
reports, so words the labelled site never writes ("GCs", "inflam") are learnt from the reports they occur in.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    DistilBertConfig,
    DistilBertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ehrseq.artifacts import Artifact, load_artifact, save_artifact
from ehrseq.errors import ArtifactError, DataValidationError
from ehrseq.featurize.text import load_tokenizer, texts_and_ids, train_wordpiece
from ehrseq.models.augment import augmented
from ehrseq.models.outputs import ModelOutput
from ehrseq.models.scope_marking import mark_all
from ehrseq.models.text_net import (  # noqa: F401  (the classifier's config and network, re-exported)
    MODEL_TYPE,
    POOLINGS,
    PRESETS,
    TextClassifierConfig,
    TextClassifierNet,
    TextInput,
    Windows,
    _bce,
    _drop_tokens,
    _group,
    _length_batches,
    _loss,
    _mlm_loss,
    _pad,
    _report_lengths,
    _TextBatch,
    choose_thresholds,
    sharpen,
)
from ehrseq.train.trainer import TrainConfig, model_device, train
from ehrseq.utils import seed_everything


class TextClassifier:
    """Fit / predict / save wrapper around :class:`TextClassifierNet` and its tokenizer."""

    def __init__(self, config: TextClassifierConfig | None = None) -> None:
        self.config = config or TextClassifierConfig()
        self.nets_: list[TextClassifierNet] = []  # one per ensemble member
        self.tokenizer_: PreTrainedTokenizerBase | None = None
        self.thresholds_: np.ndarray | None = None  # (K,)
        self.history_: list[dict[str, float]] = []

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train_df: pd.DataFrame,
        tuning_df: pd.DataFrame,
        unlabeled: TextInput | None = None,
        adapt_to: TextInput | None = None,
    ) -> TextClassifier:
        """Train on ``train_df`` (text + label columns), pick the epoch and thresholds on ``tuning_df``.

        ``unlabeled``: more reports without labels. With the from-scratch encoder they join the WordPiece
        vocabulary and the masked-LM domain pre-training; they never enter the supervised loss. Keep the reports
        you will evaluate on out of them. Caution: a *new site's* unlabelled reports here lowered cross-site
        AUROC on the synthetic benchmark (``benchmarks/results/text_biopsy.md``): masked-LM learns from
        context, and "giant cells absent" shares its context with "giant cells present", so the new site's
        negations are pulled next to the positives the labels taught. Pass a new site's reports as
        ``adapt_to`` instead.

        ``adapt_to``: unlabelled reports of the site the model will be used at (self-training, for a new
        centre). After the supervised fit, the model scores them; each member then goes on fine-tuning on the
        labelled reports plus these, with the scores sharpened (``p^2 / (p^2 + (1 - p)^2)``) as soft targets,
        for ``self_train_rounds`` rounds of ``epochs`` epochs. The epoch and the thresholds are still chosen
        on ``tuning_df`` (the labelled site). They never enter the vocabulary or the masked-LM, so the new
        site's negations are learnt through the labels the model gives them. Keep the reports you will
        evaluate on out of them.
        """
        cfg = self.config
        seed_everything(cfg.seed)
        train_texts, y_train = self._check_labelled(train_df, "train_df")
        tune_texts, y_tune = self._check_labelled(tuning_df, "tuning_df")
        if cfg.augment:
            train_texts, y_train = augmented(train_texts, y_train, cfg.augment, cfg.seed, cfg.paraphraser)
            y_train = y_train.astype(np.float32)
        extra = texts_and_ids(unlabeled)[0] if unlabeled is not None else []
        target = _adapt_texts(adapt_to) if adapt_to is not None and cfg.self_train_rounds > 0 else None
        if cfg.pretrained is None:
            self.tokenizer_ = train_wordpiece(
                self._read(train_texts + extra), vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency
            )
        windows = None  # (train, tuning, MLM corpus), tokenised once, when the tokenizer exists
        self.nets_, self.history_ = [], []
        for k in range(cfg.ensemble):
            seed = cfg.seed + k
            seed_everything(seed)
            if cfg.pretrained is not None:  # every member starts from the pretrained weights
                self.tokenizer_, encoder = _load_pretrained(cfg.pretrained)
            if windows is None:
                train_w = self.windows(train_texts)
                windows = (train_w, self.windows(tune_texts), self.windows(train_texts + extra) if extra else train_w)
            train_w, tune_w, corpus = windows
            if cfg.pretrained is None:
                mlm = self._scratch_encoder()
                encoder = self._pretrain_mlm(mlm, corpus, seed) if cfg.mlm_epochs > 0 else mlm.distilbert
            net = TextClassifierNet(encoder, len(cfg.labels), cfg.dropout, cfg.pooling)
            if cfg.pos_weight:
                pos = y_train.sum(0)
                net.pos_weight = torch.from_numpy(np.clip((len(y_train) - pos) / np.maximum(pos, 1), 1, 10))
            self.nets_.append(net)
            self._finetune(net, train_w, y_train, tune_w, y_tune, seed, member=k)
        if target is not None:
            self._self_train(train_w, y_train, target, tune_w, y_tune)
        self.thresholds_ = choose_thresholds(y_tune, self._proba(tune_w, len(tune_texts)), cfg.threshold_metric)
        return self

    def adapt(self, train_df: pd.DataFrame, tuning_df: pd.DataFrame, adapt_to: TextInput) -> TextClassifier:
        """Self-train this fitted classifier towards a new site: what ``fit(..., adapt_to=...)`` does after
        its supervised part (``train_df`` / ``tuning_df`` as given to :meth:`fit`). Thresholds are re-chosen
        on ``tuning_df``. Runs ``config.self_train_rounds`` rounds (at least one)."""
        self._check_fitted()
        train_texts, y_train = self._check_labelled(train_df, "train_df")
        tune_texts, y_tune = self._check_labelled(tuning_df, "tuning_df")
        target = _adapt_texts(adapt_to)
        self.config.self_train_rounds = max(1, self.config.self_train_rounds)
        tune_w = self.windows(tune_texts)
        self._self_train(self.windows(train_texts), y_train, target, tune_w, y_tune)
        self.thresholds_ = choose_thresholds(y_tune, self._proba(tune_w, len(tune_texts)),
                                             self.config.threshold_metric)
        return self

    def _self_train(self, train_w: Windows, y_train: np.ndarray, target: list[str], tune_w: Windows,
                    y_tune: np.ndarray) -> None:
        """Rounds of: score ``target`` with the (ensemble) model, sharpen, fine-tune every member on both."""
        target_w = self.windows(target)
        both_w = Windows(ids=train_w.ids + target_w.ids, report=np.concatenate([train_w.report,
                                                                               target_w.report + len(y_train)]))
        done = max((h.get("self_train_round", 0) for h in self.history_), default=0)
        for r in range(done + 1, done + 1 + self.config.self_train_rounds):
            y_both = np.concatenate([y_train, sharpen(self._proba(target_w, len(target))).astype(np.float32)])
            for k, net in enumerate(self.nets_):
                seed = self.config.seed + k + 1000 * r
                seed_everything(seed)
                self._finetune(net, both_w, y_both, tune_w, y_tune, seed, member=k, self_train_round=r)

    @property
    def net_(self) -> TextClassifierNet | None:
        """The network of a single-member classifier (the first member of an ensemble)."""
        return self.nets_[0] if self.nets_ else None

    def _check_labelled(self, df: pd.DataFrame, name: str) -> tuple[list[str], np.ndarray]:
        if not isinstance(df, pd.DataFrame) or len(df) == 0:
            raise DataValidationError("expected a non-empty DataFrame with text and label columns", file=name)
        texts, _ = texts_and_ids(df)
        for lab in self.config.labels:
            if lab not in df.columns:
                raise DataValidationError("missing label column", file=name, column=lab)
            bad = ~df[lab].isin([0, 1, True, False])
            if bad.any():
                ids = df.loc[bad, "report_id"].tolist() if "report_id" in df.columns else np.flatnonzero(bad)
                raise DataValidationError(
                    f"labels must be 0/1; bad report_id(s)/rows {list(ids)[:5]}", file=name, column=lab,
                    n_rows=int(bad.sum()),
                )
        return texts, df[list(self.config.labels)].to_numpy(dtype=np.float32)

    def _scratch_encoder(self) -> DistilBertForMaskedLM:
        cfg, tok = self.config, self.tokenizer_
        dcfg = DistilBertConfig(
            vocab_size=len(tok), dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
            hidden_dim=cfg.hidden_dim, max_position_embeddings=cfg.max_length, dropout=cfg.dropout,
            attention_dropout=cfg.dropout if cfg.attention_dropout is None else cfg.attention_dropout,
            pad_token_id=tok.pad_token_id,
        )
        return DistilBertForMaskedLM(dcfg)  # the MLM head is dropped after pre-training

    def _pretrain_mlm(self, mlm: DistilBertForMaskedLM, w: Windows, seed: int) -> PreTrainedModel:
        """Masked-LM on the training windows (15 % of tokens: 80 % [MASK], 10 % random, 10 % kept), on the
        shared trainer: every epoch runs and the last weights are kept. The vocabulary head runs on the masked
        positions only (:func:`_mlm_loss`)."""
        cfg, tok = self.config, self.tokenizer_
        gen = torch.Generator().manual_seed(seed + 1)
        special = torch.tensor(sorted(set(tok.all_special_ids)))
        n_win = len(w.ids)
        bs = max(cfg.batch_size * 2, 8)
        lengths = w.lengths()

        def batches(_epoch: int) -> Iterator[_TextBatch]:
            perm = torch.randperm(n_win, generator=gen)
            groups = _length_batches(perm, lengths, bs, gen) if cfg.length_buckets else [
                r.tolist() for r in perm.split(bs)]
            for rows in groups:
                ids, att = _pad([w.ids[i] for i in rows], tok.pad_token_id)
                maskable = att.bool() & ~torch.isin(ids, special)
                chosen = (torch.rand(ids.shape, generator=gen) < cfg.mlm_probability) & maskable
                targets, positions = ids[chosen], chosen.flatten().nonzero().squeeze(1)
                roll = torch.rand(ids.shape, generator=gen)
                ids = torch.where(chosen & (roll < 0.8), tok.mask_token_id, ids)
                rand_ids = torch.randint(len(tok), ids.shape, generator=gen)
                ids = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), rand_ids, ids)
                yield _TextBatch({"input_ids": ids, "attention_mask": att, "positions": positions,
                                  "targets": targets}, len(rows))

        train(mlm, range(n_win), None, self._train_config(seed, cfg.mlm_epochs, bs), loss_fn=_mlm_loss,
              batches=batches, keep_best=False, reseed=False)  # fit() seeded this member
        return mlm.distilbert

    def _finetune(self, net: TextClassifierNet, train_w: Windows, y: np.ndarray, tune_w: Windows,
                  y_tune: np.ndarray, seed: int, member: int = 0, self_train_round: int = 0) -> None:
        """Fine-tune ``net`` on the shared trainer: every epoch runs, the epoch with the lowest tuning BCE is kept."""
        cfg, tok = self.config, self.tokenizer_
        gen = torch.Generator().manual_seed(seed + 2)
        n = len(y)
        by_report = _group(train_w, n)
        special = torch.tensor(sorted(set(tok.all_special_ids)))
        lengths = _report_lengths(train_w, n) if cfg.length_buckets else None

        def batches(_epoch: int) -> Iterator[_TextBatch]:
            perm = torch.randperm(n, generator=gen)
            groups = _length_batches(perm, lengths, cfg.batch_size, gen) if lengths is not None else [
                r.tolist() for r in perm.split(cfg.batch_size)]
            for rows in groups:
                batch = self._batch(train_w, by_report, rows)
                if cfg.input_drop > 0:
                    batch = _drop_tokens(batch, cfg.input_drop, special, tok.pad_token_id, gen)
                if cfg.input_mask > 0 and tok.mask_token_id is not None:
                    ids = batch["input_ids"]
                    maskable = batch["attention_mask"].bool() & ~torch.isin(ids, special)
                    chosen = (torch.rand(ids.shape, generator=gen) < cfg.input_mask) & maskable
                    batch["input_ids"] = ids.masked_fill(chosen, tok.mask_token_id)
                yield _TextBatch({**batch, "labels": torch.from_numpy(y[rows])}, len(rows))

        def tuning_bce(m: nn.Module) -> float:
            return _bce(self._proba(tune_w, len(y_tune), [m]), y_tune)

        result = train(net, range(n), None, self._train_config(seed, cfg.epochs, cfg.batch_size), loss_fn=_loss,
                       batches=batches, tuning_loss=tuning_bce, reseed=False)
        self.history_ += [{"member": member, "epoch": r["epoch"], "tuning_bce": r["tuning_loss"],
                           **({"self_train_round": self_train_round} if self_train_round else {})}
                          for r in result.history]

    def _train_config(self, seed: int, epochs: int, batch_size: int) -> TrainConfig:
        """The shared trainer's settings for a text loop: linear decay after the warm-up, clipping at 1, no
        early stop (every epoch runs; the fine-tuning keeps its best tuning epoch)."""
        cfg = self.config
        return TrainConfig(epochs=epochs, batch_size=batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                           patience=max(epochs, 1), grad_clip=1.0, seed=seed, progress=False, schedule="linear",
                           warmup=cfg.warmup, min_delta=0.0, device=cfg.device)

    def _batch(self, w: Windows, by_report: list[list[int]], rows: list[int]) -> dict[str, torch.Tensor | int]:
        """The windows of reports ``rows`` padded into one batch, with each window's position in ``rows``."""
        win = [j for r in rows for j in by_report[r]]
        sample_map = torch.tensor([k for k, r in enumerate(rows) for _ in by_report[r]])
        ids, att = _pad([w.ids[j] for j in win], self.tokenizer_.pad_token_id)
        return {"input_ids": ids, "attention_mask": att, "sample_map": sample_map, "n_reports": len(rows)}

    # ------------------------------------------------------------------ inference
    def _read(self, texts: list[str]) -> list[str]:
        """The reports as the tokenizer sees them: scope-marked with ``mark_scopes``, else as written."""
        return mark_all(texts) if self.config.mark_scopes else texts

    def windows(self, texts: list[str]) -> Windows:
        """Tokenise into windows of at most ``max_length`` tokens sharing ``stride`` tokens (reports marked
        first with ``mark_scopes``)."""
        enc = self.tokenizer_(
            self._read(texts), truncation=True, max_length=self.config.max_length, stride=self.config.stride,
            return_overflowing_tokens=True, padding=False,
        )
        return Windows(ids=enc["input_ids"], report=np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64))

    def n_windows(self, texts: TextInput) -> np.ndarray:
        """(N,) number of windows each report is split into."""
        self._check_fitted()
        t, _ = texts_and_ids(texts)
        return self.windows(t).per_report(len(t))

    def predict_proba(self, texts: TextInput, member: int | None = None) -> np.ndarray:
        """(N, K) probabilities, columns in ``config.labels`` order. A DataFrame needs a ``text`` column.

        An ensemble averages its members; ``member=k`` gives member k's own probabilities.
        """
        self._check_fitted()
        t, _ = texts_and_ids(texts)
        return self._proba(self.windows(t), len(t), None if member is None else [self.nets_[member]])

    def predict(self, texts: TextInput) -> np.ndarray:
        """(N, K) 0/1 decisions at the per-label thresholds chosen on the tuning split."""
        return (self.predict_proba(texts) >= self.thresholds_).astype(np.int64)

    def forward(self, **batch: torch.Tensor) -> ModelOutput:
        """Run the underlying :class:`TextClassifierNet` on a tokenised batch (the first member of an ensemble)."""
        self._check_fitted()
        return self.net_(**batch)

    @torch.inference_mode()
    def _proba(self, w: Windows, n: int, nets: list[TextClassifierNet] | None = None) -> np.ndarray:
        """(n, K) probabilities: the windows sorted by length and run ``predict_batch`` at a time (little
        padding), each report's window logits max-pooled, sigmoid, averaged over ``nets``."""
        nets = self.nets_ if nets is None else nets
        k = len(self.config.labels)
        if n == 0:
            return np.zeros((0, k))
        for net in nets:
            net.eval()
        dev = model_device(nets[0])
        best = np.full((len(nets), n, k), -np.inf, dtype=np.float32)  # per report: max logit over its windows
        order = np.argsort(w.lengths(), kind="stable")
        for start in range(0, len(order), self.config.predict_batch):
            rows = order[start: start + self.config.predict_batch]
            ids, att = (t.to(dev) for t in _pad([w.ids[j] for j in rows], self.tokenizer_.pad_token_id))
            for i, net in enumerate(nets):
                np.maximum.at(best[i], w.report[rows], net(input_ids=ids, attention_mask=att).logits.float().cpu().numpy())
        return torch.sigmoid(torch.from_numpy(best)).numpy().mean(0).astype(np.float64)

    def _check_fitted(self) -> None:
        if not self.nets_ or self.tokenizer_ is None:
            raise RuntimeError("TextClassifier is not fitted; call fit() or TextClassifier.load()")

    # ------------------------------------------------------------------ persistence
    def save(self, out_dir: str | Path, metrics: dict[str, Any] | None = None, **artifact_kw: Any) -> Path:
        """Write an artifact: weights (safetensors), config + encoder config, thresholds.json, tokenizer/."""
        self._check_fitted()
        config = {
            "model_type": MODEL_TYPE,
            "target": "biopsy",
            "model": asdict(self.config),
            "encoder": self.net_.encoder.config.to_dict(),
        }
        # one member: the keys of a plain TextClassifierNet (as before ensembles); more: "member{k}." prefixes
        state = self.net_.state_dict() if len(self.nets_) == 1 else {
            f"member{k}.{name}": t for k, net in enumerate(self.nets_) for name, t in net.state_dict().items()
        }
        thresholds = dict(zip(self.config.labels, self.thresholds_.tolist()))
        with tempfile.TemporaryDirectory() as tmp:
            self.tokenizer_.save_pretrained(tmp)
            return save_artifact(
                out_dir, state_dict=state, config=config, metrics=metrics,
                extras={"thresholds": thresholds, "history": self.history_}, tokenizer_dir=tmp, **artifact_kw,
            )

    @classmethod
    def load(cls, path: str | Path) -> TextClassifier:
        """Rebuild a classifier from :meth:`save`'s artifact; reads only JSON, safetensors and tokenizer files."""
        return cls.from_artifact(load_artifact(path, expect_model_type=MODEL_TYPE))

    @classmethod
    def from_artifact(cls, art: Artifact) -> TextClassifier:
        """Rebuild a classifier from an artifact already loaded (and verified) by :func:`load_artifact`."""
        path = art.path
        if art.tokenizer_dir is None or "thresholds" not in art.extras:
            raise ArtifactError(f"{path}: text classifier artifact lacks tokenizer/ or thresholds.json")
        model = cls(TextClassifierConfig.from_dict(art.config["model"]))
        enc_cfg = dict(art.config["encoder"])
        kind = enc_cfg.pop("model_type")
        n = model.config.ensemble
        for k in range(n):
            enc = AutoModel.from_config(AutoConfig.for_model(kind, **enc_cfg))
            net = TextClassifierNet(enc, len(model.config.labels), model.config.dropout, model.config.pooling)
            prefix = f"member{k}." if n > 1 else ""
            part = {name[len(prefix):]: t for name, t in art.state_dict.items() if name.startswith(prefix)}
            try:
                net.load_state_dict(part)
            except RuntimeError as e:
                raise ArtifactError(f"{path}: weights of ensemble member {k} do not match its config") from e
            model.nets_.append(net.eval())
        model.tokenizer_ = load_tokenizer(art.tokenizer_dir)
        model.thresholds_ = np.array([art.extras["thresholds"][k] for k in model.config.labels])
        model.history_ = art.extras.get("history", [])
        return model


# ---------------------------------------------------------------------- helpers


def _load_pretrained(name: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """A local directory (never the network) or a hub name (needs a reachable hub or a warm cache)."""
    local = Path(name).is_dir()
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=local)
        enc = AutoModel.from_pretrained(name, local_files_only=local)
    except OSError as e:
        where = "local directory" if local else "hub model (is a hub or its cache reachable? HF_HUB_OFFLINE?)"
        raise ArtifactError(f"could not load pretrained {where} '{name}': {type(e).__name__}") from e
    return tok, enc


def _adapt_texts(adapt_to: TextInput) -> list[str]:
    texts = texts_and_ids(adapt_to)[0]
    if not texts:
        raise DataValidationError("adapt_to holds no reports; pass the new site's report texts", file="adapt_to")
    return texts
