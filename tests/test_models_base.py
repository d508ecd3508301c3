"""The model interface: training data checks, the family lookup, and save -> load for the built-in families."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from musicrec.arrays import Ragged
from musicrec.models import FAMILIES, TrainingData, family_class, fit_model, load_model


def test_training_data_rejects_items_outside_the_catalogue_and_misaligned_timestamps():
    with pytest.raises(ValueError, match="dense indices in 0..2"):
        TrainingData.of([[0, 3]], n_items=3)
    with pytest.raises(ValueError, match="one value per training item"):
        TrainingData.of([[0, 1]], n_items=3, timestamps=[[5]])


@pytest.mark.parametrize("list_type", [pa.list_(pa.int32()), pa.large_list(pa.int64())])
def test_ragged_from_arrow_reads_chunks_slices_and_nulls(list_type):
    rows = [[3, 1], None, [], [7, 7, 2], [5]]
    whole = pa.array(rows, list_type)
    # Chunks that are slices of a larger array (sharing its child values), one of them empty.
    column = pa.chunked_array([whole.slice(0, 2), whole.slice(2, 0), whole.slice(2, 3)])
    for arrow in (column, whole.slice(1, 3), pa.chunked_array([], list_type)):
        ragged = Ragged.from_arrow(arrow)
        expected = [r or [] for r in arrow.to_pylist()]
        assert [r.tolist() for r in ragged.to_lists()] == expected and ragged.values.dtype == np.int64


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model family 'nope'.*mostpop"):
        family_class("nope")


def tiny(cls):
    """The family's config scaled down to test size (a transformer trains one small epoch)."""
    if cls.Config is None:
        return None
    small = {"embedding_dim": 8, "ffn_dim": 8, "num_blocks": 1, "max_epochs": 1, "batch_size": 16, "max_len": 8}
    return cls.Config(**{key: value for key, value in small.items() if key in cls.Config.model_fields})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_save_then_load_gives_identical_scores(family, tmp_path):
    rng = np.random.default_rng(0)
    train = [rng.integers(100, 140, size=n) * 2 for n in rng.integers(1, 30, size=40)]
    stamps = [np.arange(len(row)) * 3600 for row in train]  # decaypop learns from timestamps
    cls = family_class(family)
    fitted = fit_model(
        f"{family}[disc_track]", cls(tiny(cls), seed=3), train, "disc_track", k=3, tasks=("T1",), timestamps=stamps
    )
    histories = Ragged.from_lists([rng.integers(0, len(fitted.items), size=n) for n in (0, 1, 5)])
    loaded = load_model(fitted.save(tmp_path / family))
    assert (loaded.name, loaded.sequence, loaded.k, loaded.tasks) == (fitted.name, "disc_track", 3, ("T1",))
    assert np.array_equal(loaded.items.ids, fitted.items.ids)
    assert loaded.model.family == family and loaded.model.seed == 3
    assert torch.equal(loaded.model.score(histories), fitted.model.score(histories))


def test_load_of_a_folder_without_a_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        load_model(tmp_path)
