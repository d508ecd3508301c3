"""SASRec / gSASRec / BERT4Rec as models: initialisation, the interface, early stopping, and
learning a deterministic order well above popularity."""

import numpy as np
import pytest
import torch

from musicrec.arrays import Ragged
from musicrec.config.models import BERT4RecConfig, GSASRecConfig, SASRecConfig
from musicrec.models import FAMILIES, TrainingData, family_class
from musicrec.models.sequential import BERT4Rec, GSASRec, SequentialModel

TINY = {"embedding_dim": 16, "ffn_dim": 16, "max_len": 8, "batch_size": 16, "max_epochs": 2}


@pytest.fixture(autouse=True)
def one_thread():
    # The 2-core test machine is shared: intra-op threads only add contention at these sizes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def successor_data(n_items=40, users=300, seed=0):
    """Histories that always continue with the item's successor in a fixed permutation."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(n_items)
    rows = []
    for _ in range(users):
        row = [int(rng.integers(n_items))]
        for _ in range(int(rng.integers(4, 20)) - 1):
            row.append(int(succ[row[-1]]))
        rows.append(row)
    return TrainingData.of(rows, n_items), succ


def test_the_sequential_families_are_registered():
    for family, cls, config in [("sasrec", "SASRec", SASRecConfig), ("gsasrec", "GSASRec", GSASRecConfig), ("bert4rec", "BERT4Rec", BERT4RecConfig)]:
        model_class = family_class(family)
        assert issubclass(model_class, SequentialModel) and model_class.__name__ == cls
        assert model_class.Config is config and family in FAMILIES
        assert model_class().config == config()  # defaults: paper 000 Table 2


def test_paper_defaults():
    c = GSASRecConfig()
    assert (c.embedding_dim, c.num_blocks, c.num_heads, c.ffn_dim, c.batch_size, c.max_epochs) == (128, 2, 1, 128, 512, 100)
    assert (c.negatives, c.gbce_alpha, c.gbce_t, c.max_len, c.item_init) == (25, 0.17113, 0.55591, 200, "random")
    assert (c.dropout, c.weight_decay, c.learning_rate) == (0.09496, 0.35520, 0.0031805)


def test_initialisation_is_small_deterministic_and_padding_is_zero():
    a, b = GSASRec(GSASRecConfig(**TINY), seed=3), GSASRec(GSASRecConfig(**TINY), seed=3)
    a.init_network(500)
    b.init_network(500)
    for (name, x), y in zip(a.network.state_dict().items(), b.network.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    table = a.network.backbone.items.weight
    assert table.std() < 0.03  # not nn.Embedding's N(0, 1) (docs/models.md trap 1)
    assert torch.count_nonzero(table[500]) == 0  # padding row
    other = GSASRec(GSASRecConfig(**TINY), seed=4)
    other.init_network(500)
    assert not torch.equal(other.network.backbone.items.weight, table)


def test_inputs_scale_item_rows_by_the_root_of_the_width():
    """SASRec's input layout: item row x sqrt(d) + position row, so that a small-initialised
    item still outweighs its position (without it training sat at popularity level for most
    epochs on the synthetic discoveries, docs/models.md)."""
    model = GSASRec(GSASRecConfig(**TINY), seed=0)
    model.init_network(50)
    backbone = model.network.backbone.eval()
    seen = []
    backbone.blocks[0].register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    seqs = torch.tensor([[50, 3, 7, 9], [1, 2, 3, 4]])  # left-padded (row 50 is padding), width 4
    backbone.encode(seqs)
    table, positions = backbone.items.weight, backbone.positions.weight
    expected = table[seqs] * TINY["embedding_dim"] ** 0.5 + positions[TINY["max_len"] - 4 :]
    assert torch.allclose(seen[0], expected, atol=1e-6)


def test_scores_cover_real_items_only_and_match_the_embeddings():
    model = BERT4Rec(BERT4RecConfig(**TINY), seed=0)
    model.init_network(30)
    histories = Ragged.from_lists([[], [1], list(range(20))])
    scores = model.score(histories)
    assert scores.shape == (3, 30) and scores.dtype == torch.float32  # padding and [MASK] are not items
    q, e = model.query_embeddings(histories), model.item_embeddings()
    assert q.shape == (3, 16) and e.shape == (30, 16)
    assert np.allclose(scores.numpy(), q @ e.T, atol=1e-5)
    # Only the most recent max_len - 1 items (then [MASK]) matter.
    longer = Ragged.from_lists([[5, 6, 7] + list(range(20))])
    assert torch.allclose(model.score(longer), scores[2:], atol=1e-6)


def test_the_logit_offset_starts_at_the_best_constant_logit_and_leaves_rankings_alone():
    model = GSASRec(GSASRecConfig(**TINY, negatives=25), seed=0)
    model.init_network(40)
    net = model.network
    c = net.offset.detach().clone().requires_grad_(True)
    loss = net.beta * torch.nn.functional.softplus(-c) + 25 * torch.nn.functional.softplus(c)
    loss.backward()
    assert abs(float(c.grad)) < 1e-6  # log(beta / k) minimises the loss of constant logits
    histories = Ragged.from_lists([[1, 2, 3]])
    before = model.score(histories)
    with torch.no_grad():
        net.offset += 5.0
    assert torch.equal(model.score(histories), before)


def test_item_init_from_audio_is_a_clear_error_until_audio_is_wired():
    model = GSASRec(GSASRecConfig(**TINY, item_init="audio_init"))
    with pytest.raises(ValueError, match="item_init 'audio_init' needs the tracks' audio embeddings"):
        model.init_network(10)


def test_state_round_trip_rebuilds_the_network():
    data, _ = successor_data(users=40)
    model = GSASRec(GSASRecConfig(**TINY), seed=1).fit(data)
    again = GSASRec(GSASRecConfig(**TINY), seed=1)
    again.load_state(model.state())
    histories = Ragged.from_lists([[1, 2, 3], [4]])
    assert again.n_items == 40 and torch.equal(again.score(histories), model.score(histories))


def test_early_stopping_counts_patience_in_epochs_and_keeps_the_best_epoch():
    data, _ = successor_data(users=40)
    metrics = [0.1, 0.3, 0.2, 0.25, 0.29, 0.9]
    snapshots = {}

    def validation(model, epoch):
        snapshots[epoch] = model.state()
        return metrics[epoch]

    model = GSASRec(GSASRecConfig(**{**TINY, "max_epochs": 6}, patience=3), seed=0).fit(data, validation)
    assert [h["epoch"] for h in model.history] == [0, 1, 2, 3, 4]  # 3 epochs without beating 0.3
    best = snapshots[1]
    assert all(np.array_equal(v, best[k]) for k, v in model.state().items())


# 25 negatives out of 40 items: without the logit offset this sits at popularity level for
# many epochs (the collapse NextItemNetwork's docstring describes).
LEARNERS = {"gsasrec": {"negatives": 25}, "sasrec": {"negatives": 25}, "bert4rec": {"negatives": 8}}


@pytest.mark.learning
@pytest.mark.parametrize("family", sorted(LEARNERS))
def test_a_small_model_learns_a_deterministic_order(family):
    data, succ = successor_data()
    cls = family_class(family)
    settings = {**TINY, "max_len": 10, "batch_size": 64, "max_epochs": 12, "dropout": 0.0, "learning_rate": 0.01}
    model = cls(cls.Config(**settings, **LEARNERS[family]), seed=0).fit(data)
    rng = np.random.default_rng(9)
    starts = rng.integers(40, size=200)
    histories = Ragged.from_lists([[int(s), int(succ[s]), int(succ[succ[s]])] for s in starts])
    truth = succ[succ[succ[starts]]]
    top10 = torch.topk(model.score(histories), 10, dim=1).indices.numpy()
    hit = (top10 == truth[:, None]).any(axis=1).mean()
    # Popularity is nearly uniform here: it would hit about 10 / 40.
    assert hit > 0.9, (family, hit, [round(h["loss"], 3) for h in model.history])
