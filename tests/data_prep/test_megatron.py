"""The output is what megatron-core training consumes: IndexedDataset, GPTDataset, tokenizer."""

import warnings

import numpy as np
import pytest

from data_prep.indexfile import DocReader
from data_prep.split import SPLITS
from data_prep.validate import validate_dataset

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.tokenizers import MegatronTokenizer


@pytest.fixture(scope="module")
def megatron_tokenizer(built):
    root, _ = built
    # tokenizer_metadata.json written at export lets it load without further arguments.
    return MegatronTokenizer.from_pretrained(tokenizer_path=str(root / "tokenizer"))


def test_indexed_dataset_matches_manifest_and_our_reader(built):
    root, m = built
    for split in SPLITS:
        ds = IndexedDataset(str(root / f"{split}_text_document"))
        assert len(ds) == m["splits"][split]["num_docs"]
        assert int(ds.sequence_lengths.sum()) == m["splits"][split]["num_tokens"]
        ours = DocReader(root / f"{split}_text_document")
        for i in range(0, len(ds), 7):
            assert np.array_equal(ds[i], ours[i])


def test_gpt_dataset_reads_the_output(built, megatron_tokenizer, tmp_path):
    root, m = built
    seq = 64
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=seq,
        blend_per_split=[([str(root / m["splits"][s]["prefix"])], None) for s in SPLITS],
        split=None,
        path_to_cache=str(tmp_path),
        tokenizer=megatron_tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
    )
    train, valid, test = BlendedMegatronDatasetBuilder(
        GPTDataset, [40, 8, 8], lambda: True, config
    ).build()
    assert len(train) >= 40 and len(valid) >= 8 and len(test) >= 8
    all_train = np.concatenate(
        [
            DocReader(root / "train_text_document")[i]
            for i in range(m["splits"]["train"]["num_docs"])
        ]
    )
    sample = train[0]
    tokens = sample["tokens"].numpy()
    assert tokens.shape == (seq,) and tokens.max() < m["tokenizer"]["vocab_size"]
    # Every sample is a window of the concatenated (shuffled-by-document) token stream; it
    # must at least consist of real ids and contain EODs between documents.
    assert np.isin(tokens, all_train).all()
    assert any((train[i]["tokens"].numpy() == m["tokenizer"]["eod_id"]).any() for i in range(10))


def test_megatron_tokenizer_agrees_with_the_bin(built, megatron_tokenizer, corpus):
    root, m = built
    from tests.data_prep.common import SPLIT, expected_splits

    assert megatron_tokenizer.eod == m["tokenizer"]["eod_id"]
    assert megatron_tokenizer.vocab_size == m["tokenizer"]["vocab_size"]
    reader = DocReader(root / "valid_text_document")
    for i, text in enumerate(expected_splits(corpus[1], SPLIT)["valid"][:20]):
        ids = reader[i].tolist()[:-1]
        assert megatron_tokenizer.tokenize(text) == ids
        assert megatron_tokenizer.detokenize(ids) == text


def test_deep_validate_reads_everything(built):
    root, m = built
    assert validate_dataset(root, deep=True)["name"] == m["name"]
