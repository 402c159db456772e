"""``make eval LAYERS=``: lm-eval scores of every layer through the logit lens.

The model truncated after layer l (its embeddings, its first l decoder layers, then its own final
norm and output head, tied or not; l = 0: the embeddings straight into the final norm and head)
computes exactly the logit lens at h_l, so any lm-eval task scores a layer as it scores a model
(the self-distillation paper reads LAMBADA accuracy and WikiText perplexity this way). The
truncation is done in memory on the model, loaded once per target in ``DTYPE`` on ``DEVICE``:
the decoder's ``nn.ModuleList`` (found as ``eval.hf_model`` finds it) is replaced by its first l
layers, the config's ``num_hidden_layers`` (and ``layer_types`` where the architecture has them)
follow, HFLM scores it with the target's tokenizer settings (``eval.lm_models``), and the model is
restored. An HF folder with ``num_hidden_layers = l`` and the first l layers' weights is the same
model; none is written (L + 1 copies of the embeddings).

``LAYERS`` is ``all`` (0..L) or a comma list of layer numbers 0..L; a number beyond L is refused
before anything is exported (the run's depth) or loaded (a local ``MODEL`` folder's config.json;
a hub id is checked once its config is read). Results: ``<out>/lm_eval/<iter_N | model-name>/
layers/<l>/{results.json,table.md}`` (``make eval``'s record plus ``layer`` and ``num_layers``);
``eval.layer_scores`` writes the score-vs-layer table and plot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.files import read_json
from eval.rundir import EvalError, RunDir

ALL = "all"
_NUMBER = re.compile(r"[0-9]+")


def parse_layers(spec: str) -> list[int] | None:
    """``LAYERS`` -> sorted layer numbers, None for ``all``; EvalError for anything else."""
    if spec == ALL:
        return None
    words = [w.strip() for w in spec.split(",")]
    if bad := [w for w in words if not _NUMBER.fullmatch(w)]:
        raise EvalError(
            f"LAYERS must be all or a comma list of layer numbers 0..L, got {bad[0]!r} in {spec!r}"
        )
    return sorted({int(w) for w in words})


def select_layers(spec: str, num_layers: int, what: str) -> list[int]:
    """The layers ``spec`` names in a model of ``num_layers`` decoder layers (states 0..L)."""
    layers = parse_layers(spec)
    if layers is None:
        return list(range(num_layers + 1))
    if too_deep := [n for n in layers if n > num_layers]:
        raise EvalError(f"LAYERS={spec}: {what} has {num_layers} layers (0 = embeddings .. "
                        f"{num_layers}), no layer {too_deep[0]}")  # fmt: skip
    return layers


def config_num_layers(config: dict) -> int | None:
    """Decoder layers of a ``config.json`` (its ``text_config``'s for multimodal models)."""
    text = config.get("text_config") or config
    value = text.get("num_hidden_layers", text.get("n_layer"))
    return value if isinstance(value, int) else None


def check_layers(spec: str, run: RunDir | None, model: str | None) -> None:
    """``LAYERS`` against the depth known before any export or load: a local ``MODEL`` folder's
    config.json, else the run's model."""
    if model:
        path = Path(model).expanduser() / "config.json"
        if path.is_file() and (num := config_num_layers(read_json(path))) is not None:
            select_layers(spec, num, f"MODEL={model}")
    elif run is not None:
        select_layers(spec, run.model.num_layers, f"RUN={run.path}")


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@contextmanager
def truncated(model, layers: int):
    """``model`` as the logit lens at h_``layers``: its first ``layers`` decoder layers, then its
    final norm and head; the whole model again on exit."""
    import torch

    from eval.hf_model import decoder_stack

    config = _text_config(model)
    total = config.num_hidden_layers
    owner, name, _ = decoder_stack(model.base_model, total)
    stack, types = getattr(owner, name), getattr(config, "layer_types", None)
    setattr(owner, name, torch.nn.ModuleList(list(stack)[:layers]))
    config.num_hidden_layers = layers
    if isinstance(types, list):
        config.layer_types = types[:layers]
    try:
        yield model
    finally:
        setattr(owner, name, stack)
        config.num_hidden_layers = total
        if isinstance(types, list):
            config.layer_types = types


def lens_models(pretrained: str, spec: str, dtype: str, device: str) -> Iterator[tuple]:
    """``(layer, L, model truncated after it)`` for every layer ``spec`` selects; one load."""
    from eval.hf_model import load

    model, _ = load(pretrained, dtype, device)
    num_layers = _text_config(model).num_hidden_layers
    for layer in select_layers(spec, num_layers, pretrained):
        with truncated(model, layer):
            yield layer, num_layers, model
