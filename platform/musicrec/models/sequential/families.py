"""SASRec, gSASRec and BERT4Rec: one backbone, three objectives, one training loop.

The pieces Ray Train's loop shares with :meth:`SequentialModel.fit` (so the two cannot
drift): :meth:`~SequentialModel.init_network` (deterministic from the seed),
``network.forward(batch)`` (the scalar training loss, so a DDP wrapper syncs gradients),
:meth:`~SequentialModel.make_optimizer`, :meth:`~SequentialModel.batches` (the sampler, with
rank / world size) and :func:`train_epoch`.

Every batch carries ``scale`` = world_size / (loss terms in the global batch): a worker's loss
is its summed terms times ``scale``, so DDP's gradient average over workers equals the
single-worker mean over the global batch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from musicrec.arrays import Ragged
from musicrec.config.models import BERT4RecConfig, GSASRecConfig, SASRecConfig, SequentialConfig
from musicrec.models.base import Model, TrainingData
from musicrec.models.sequential import losses
from musicrec.models.sequential.backbone import Backbone
from musicrec.models.sequential.sampler import (
    Tiling,
    epoch_windows,
    global_batches,
    trim,
    window_matrix,
    worker_share,
)

Batch = dict[str, torch.Tensor]
# Histories encoded per forward pass when scoring.
SCORE_CHUNK = 256


def derived_seed(*keys: int) -> int:
    return int(np.random.default_rng(list(keys)).integers(2**62))


class NextItemNetwork(nn.Module):
    """Causal backbone trained with gBCE (beta = 1: SASRec's BCE) on sampled negatives.

    A learnt scalar ``offset`` is added to every training logit, starting at log(beta / k), the
    constant logit that minimises the loss. Without it the first steps push all k negatives down
    by collapsing the (shared) item embeddings onto one direction, a plateau at popularity level
    that gBCE leaves only after many epochs; with it that push is absorbed by one number. A
    constant added to every item leaves rankings unchanged, so scoring ignores it.
    """

    def __init__(self, backbone: Backbone, beta: float, negatives: int) -> None:
        super().__init__()
        self.backbone, self.beta = backbone, beta
        self.offset = nn.Parameter(torch.tensor(math.log(beta / negatives)))

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(seqs)

    def forward(self, batch: Batch) -> torch.Tensor:
        targets, negatives = batch["targets"], batch["negatives"]
        hidden = self.backbone.encode(batch["inputs"])
        positive, negative = losses.sampled_logits(hidden, self.backbone.items.weight, targets, negatives)
        positive, negative = positive + self.offset, negative + self.offset
        valid = targets != self.backbone.pad
        negative_valid = negatives[:, None, :] != targets[:, :, None]
        return losses.gbce(positive, negative, valid, negative_valid, self.beta) * batch["scale"]


class ClozeNetwork(nn.Module):
    """Bidirectional backbone trained to recover the masked items (full or sampled softmax)."""

    def __init__(self, backbone: Backbone, sampled: bool) -> None:
        super().__init__()
        self.backbone, self.sampled = backbone, sampled

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(seqs)

    def forward(self, batch: Batch) -> torch.Tensor:
        targets = batch["targets"]
        hidden = self.backbone.encode(batch["inputs"])
        chosen = targets != self.backbone.pad
        picked, wanted = hidden[chosen], targets[chosen]
        if not self.sampled:
            return losses.full_cloze(picked, self.backbone.item_weights(), wanted) * batch["scale"]
        negatives = batch["negatives"]
        positive, negative = losses.sampled_logits(hidden, self.backbone.items.weight, targets, negatives)
        negative_valid = (negatives[:, None, :] != targets[:, :, None])[chosen]
        return losses.cloze(positive[chosen], negative[chosen], negative_valid) * batch["scale"]


def train_epoch(
    network: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch], device: torch.device | None = None
) -> float:
    """One pass of optimisation steps; the mean batch loss.

    Deterministic kernels where PyTorch has them (the bidirectional backward is otherwise not
    bit-for-bit repeatable on CPU); where it has none (some CUDA ops) it only warns.
    """
    network.train()
    total, steps = 0.0, 0
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for batch in batches:
            if device is not None:
                batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            loss = network(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    return total / max(steps, 1)


class SequentialModel(Model):
    """A transformer over the most recent ``max_len`` items of a history."""

    Config: ClassVar[type[SequentialConfig]]
    causal: ClassVar[bool] = True
    n_special: ClassVar[int] = 1  # padding (+ [MASK] for the cloze objective)
    config: SequentialConfig
    network: nn.Module

    def __init__(self, config: SequentialConfig | None = None, seed: int = 0) -> None:
        super().__init__(config, seed)
        self.history: list[dict[str, float]] = []

    # -- the pieces Ray Train shares -------------------------------------------------
    def init_network(self, n_items: int) -> None:
        """Build ``network`` for ``n_items`` items, deterministically from ``seed``."""
        c = self.config
        self.n_items = n_items
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.seed, 0))
            backbone = Backbone(
                n_items,
                self.n_special,
                dim=c.embedding_dim,
                blocks=c.num_blocks,
                heads=c.num_heads,
                ffn_dim=c.ffn_dim,
                dropout=c.dropout,
                max_len=c.max_len,
                causal=self.causal,
                item_init=c.item_init,
            )
            self.network = self._network(backbone)

    def _network(self, backbone: Backbone) -> nn.Module:
        raise NotImplementedError

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """AdamW (fused: one kernel over all parameters, the item table being most of them);
        weight decay on matrices and embeddings, not on biases and norm scales."""
        params = [p for p in params if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.config.learning_rate, fused=True)

    @property
    def tiling(self) -> Tiling:
        return Tiling(self.config.max_len + 1, self.config.max_len, 2)

    def batches(
        self, data: TrainingData, epoch: int, rank: int = 0, world_size: int = 1, batch_size: int | None = None
    ) -> Iterator[Batch]:
        """This worker's training batches of ``epoch`` (``batch_size`` is the global batch)."""
        items = data.items
        rows, ends = epoch_windows(items.lengths, self.tiling, self.config.windows_per_user, self.seed, epoch)
        sizes = np.minimum(ends, self.tiling.span)
        for number, part in enumerate(global_batches(sizes, batch_size or self.config.batch_size, self.seed, epoch)):
            windows = window_matrix(items, rows[part], ends[part], self.tiling.span, self.n_items)
            rng = np.random.default_rng([self.seed, epoch, number])
            arrays, terms = self._objective(windows, rng)
            share = worker_share(len(windows), rank, world_size)
            cut = trim(arrays["inputs"][share], self.n_items)
            batch = {key: torch.from_numpy(np.ascontiguousarray(value[share])) for key, value in arrays.items()}
            for key in ("inputs", "targets"):
                batch[key] = batch[key][:, cut:]
            batch["scale"] = torch.tensor(world_size / max(terms, 1), dtype=torch.float32)
            yield batch

    def _objective(self, windows: np.ndarray, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], int]:
        """Inputs, targets (padding where none) and negatives of a global batch, and its number of loss terms."""
        pad = self.n_items
        inputs = windows[:, :-1]
        targets = np.where(inputs == pad, pad, windows[:, 1:])
        negatives = rng.integers(0, self.n_items, size=(len(windows), self.config.negatives))
        return {"inputs": inputs, "targets": targets, "negatives": negatives}, int((targets != pad).sum())

    # -- the in-process loop ---------------------------------------------------------
    def fit(self, data: TrainingData, validation: Callable[[SequentialModel, int], float] | None = None):
        """Train for up to ``max_epochs``; with ``validation`` (NDCG@100 of the model after an
        epoch), stop after ``patience`` epochs without improvement and keep the best epoch."""
        self.init_network(data.n_items)
        optimizer = self.make_optimizer(self.network.parameters())
        self.history = []
        best, best_state, stale = -math.inf, None, 0
        for epoch in range(self.config.max_epochs):
            start = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(self.seed, 1, epoch))  # dropout
                loss = train_epoch(self.network, optimizer, self.batches(data, epoch))
            record = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - start}
            if validation is not None:
                record["metric"] = metric = float(validation(self, epoch))
                if metric > best:
                    best, best_state, stale = metric, copy.deepcopy(self.network.state_dict()), 0
                else:
                    stale += 1
            self.history.append(record)
            if stale >= self.config.patience:
                break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        self.network.eval()
        return self

    # -- inference -------------------------------------------------------------------
    def _input_rows(self, histories: Ragged) -> np.ndarray:
        """The most recent ``max_len`` items of each history, left-padded."""
        width = self.config.max_len
        return window_matrix(histories, np.arange(len(histories)), histories.lengths, width, self.n_items)

    @torch.no_grad()
    def _queries(self, histories: Ragged) -> torch.Tensor:
        rows = self._input_rows(histories)
        device = next(self.network.parameters()).device
        was_training = self.network.training
        self.network.eval()
        out = []
        for lo in range(0, len(rows), SCORE_CHUNK):
            chunk = rows[lo : lo + SCORE_CHUNK]
            chunk = chunk[:, trim(chunk, self.n_items) :]
            out.append(self.network.encode(torch.from_numpy(chunk).to(device))[:, -1])
        self.network.train(was_training)
        dim = self.config.embedding_dim
        return torch.cat(out) if out else torch.zeros(0, dim, device=device)

    @torch.no_grad()
    def score(self, histories: Ragged) -> torch.Tensor:
        items = self.network.backbone.item_weights()
        return (self._queries(histories) @ items.T).float().cpu()

    def item_embeddings(self) -> np.ndarray:
        return self.network.backbone.item_weights().detach().float().cpu().numpy().copy()

    def query_embeddings(self, histories: Ragged) -> np.ndarray:
        return self._queries(histories).float().cpu().numpy()

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.network.state_dict().items()}
        return {**arrays, "n_items": np.array(self.n_items, dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.init_network(int(state["n_items"]))
        weights = {k[len("net.") :]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("net.")}
        self.network.load_state_dict(weights)
        self.network.eval()


class SASRec(SequentialModel):
    family = "sasrec"
    Config = SASRecConfig

    def _network(self, backbone: Backbone) -> nn.Module:
        return NextItemNetwork(backbone, beta=1.0, negatives=self.config.negatives)


class GSASRec(SequentialModel):
    family = "gsasrec"
    Config = GSASRecConfig
    config: GSASRecConfig

    @property
    def alpha(self) -> float:
        given = self.config.gbce_alpha
        return given if given is not None else losses.sampling_rate(self.config.negatives, self.n_items)

    def _network(self, backbone: Backbone) -> nn.Module:
        beta = losses.gbce_beta(self.alpha, self.config.gbce_t)
        return NextItemNetwork(backbone, beta=beta, negatives=self.config.negatives)


class BERT4Rec(SequentialModel):
    family = "bert4rec"
    Config = BERT4RecConfig
    config: BERT4RecConfig
    causal = False
    n_special = 2

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    @property
    def tiling(self) -> Tiling:
        return Tiling(self.config.max_len, self.config.max_len, 1)

    def _network(self, backbone: Backbone) -> nn.Module:
        return ClozeNetwork(backbone, sampled=self.config.softmax == "sampled")

    def _objective(self, windows: np.ndarray, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], int]:
        pad = self.n_items
        real = windows != pad
        masked = (rng.random(windows.shape) < self.config.mask_prob) & real
        # A window with nothing masked would teach nothing: mask its most recent item (the
        # position a prediction uses, where [MASK] is appended).
        masked[~masked.any(axis=1) & real.any(axis=1), -1] = True
        arrays = {
            "inputs": np.where(masked, self.mask_token, windows),
            "targets": np.where(masked, windows, pad),
        }
        if self.config.softmax == "sampled":
            arrays["negatives"] = rng.integers(0, self.n_items, size=(len(windows), self.config.negatives))
        return arrays, int(masked.sum())

    def _input_rows(self, histories: Ragged) -> np.ndarray:
        """The most recent ``max_len - 1`` items of each history, left-padded, then [MASK]."""
        width = self.config.max_len - 1
        rows = window_matrix(histories, np.arange(len(histories)), histories.lengths, width, self.n_items)
        return np.concatenate([rows, np.full((len(rows), 1), self.mask_token, dtype=np.int64)], axis=1)
