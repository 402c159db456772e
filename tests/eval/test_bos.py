"""BOS: lm-eval scores the ids the model was trained on (the manifest's ``bos_prepended``).

A Llama-3 style tokenizer folder (byte-level BPE whose post-processor adds ``<|begin_of_text|>``)
goes through ``make data``'s tokenizer step, which writes documents without BOS; the export's copy
and HFLM as ``make eval`` sets it up must then score exactly those ids, with the end-of-document
token (what precedes a document in training) conditioning the first token. On the code before this
test the export copied the folder as it was and HFLM used the tokenizer's default: every request
started with a BOS the model never saw.
"""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from data_prep.encoders import make_encoder
from data_prep.tokenizer import prepare_existing
from eval.convert import legacy_keys
from eval.export_tokenizer import write_tokenizer
from eval.lm_models import Target, lm_args

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
TEXT = "The cat sat on the mat. The dog ran to the cat and sat down."


class Recorder(HFLM):
    """HFLM that records the token ids it would score instead of running the model."""

    def _loglikelihood_tokens(self, requests, **kwargs):
        self.scored = getattr(self, "scored", []) + [(r[1], r[2]) for r in requests]
        return [(0.0, False)] * len(requests)


@pytest.fixture(scope="module")
def llama3_style(tmp_path_factory):
    src = tmp_path_factory.mktemp("llama3_tok")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator([TEXT] * 20, trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, tok.token_to_id(BOS))]),
    ])  # fmt: skip
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS).save_pretrained(src)
    return src


def test_lm_eval_scores_the_trained_ids(llama3_style, tmp_path):
    data_tok, export = tmp_path / "data_tokenizer", tmp_path / "hf"
    spec, info = prepare_existing(llama3_style, data_tok)  # what make data does
    trained = make_encoder(spec).encode_batch([TEXT])[0]  # the ids written to the .bin
    bos_id = info["bos_id"]
    assert trained[0] != bos_id  # documents start without BOS (manifest: bos_prepended false)
    export.mkdir()
    ids = write_tokenizer(data_tok, export, bos_prepended=False)
    assert ids["prefix_token_id"] == info["eod_id"]
    config = LlamaConfig(vocab_size=info["vocab_size"], hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=128, bos_token_id=bos_id,
                         eos_token_id=info["eod_id"])  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(export)
    record = {"bos_prepended": False, "prefix_token_id": ids["prefix_token_id"]}
    (export / "export.json").write_text(json.dumps(record))
    target = Target(label=1, pretrained=str(export), export=record)
    lm = Recorder(**lm_args(target, device="cpu", dtype="float32", batch_size=1))

    context, target_word = TEXT.rsplit(" ", 1)
    lm.loglikelihood([Instance("loglikelihood", {}, (context, " " + target_word), 0)])
    ((ctx, cont),) = lm.scored
    assert ctx + cont == trained  # the last-word task: no BOS in front of the passage
    lm.scored = []
    lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (TEXT,), 0)])
    ((ctx, cont),) = lm.scored
    assert (ctx, cont) == ([info["eod_id"]], trained)  # the perplexity task, as in training

    # any reader using the defaults (vLLM, tokenizer(text)) gets the trained ids, too
    reloaded = PreTrainedTokenizerFast.from_pretrained(export)
    assert reloaded(TEXT)["input_ids"] == trained


def test_config_json_has_the_4x_keys(tmp_path):
    """transformers 4.x reads ``config["rope_theta"]`` (default 10000) and ``torch_dtype``."""
    from eval.convert import hf_config, write_hf_config
    from recipes.models import base

    model = base()  # Llama 3: RoPE base 500000
    path = write_hf_config(tmp_path, hf_config(model, 1024, torch.bfloat16, {}))
    config = json.loads(path.read_text())
    assert config.get("rope_theta", 10000.0) == float(model.rotary_base) != 10000.0
    assert config.get("torch_dtype") == config["dtype"] == "bfloat16"
    assert config["rope_parameters"]["rope_theta"] == float(model.rotary_base)
    assert legacy_keys({"dtype": "float32"}) == {"dtype": "float32", "torch_dtype": "float32"}


def test_data_with_bos_gets_an_export_that_adds_it(llama3_style, tmp_path):
    """The other side of the one decision: a manifest saying documents start with BOS."""
    data_tok, export = tmp_path / "data_tokenizer", tmp_path / "hf"
    spec, info = prepare_existing(llama3_style, data_tok)
    export.mkdir()
    ids = write_tokenizer(data_tok, export, bos_prepended=True)
    assert ids["prefix_token_id"] == info["bos_id"]
    trained = [info["bos_id"], *make_encoder(spec).encode_batch([TEXT])[0]]
    assert PreTrainedTokenizerFast.from_pretrained(export)(TEXT)["input_ids"] == trained
