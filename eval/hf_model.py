"""The Hugging Face source adapter: any causal LM from a local folder or the hub, its residual
stream h_0..h_L and its head, for the shared statistics (``eval.stats.Stats``).

What differs between architectures, and how it is handled:

* h_0 is the input of the first decoder layer (a forward pre-hook), not the embedding table's
  output: Gemma multiplies embeddings by sqrt(hidden) before layer 1, and that scaled state is
  what the residual stream starts from (as h_0 is layer 1's input in our Megatron probe);
* h_l is layer l's output (forward hooks; a tensor or the first element of a tuple), before the
  final norm; the decoder runs without the LM head (``model.base_model``), and the head is
  applied by the lens: ``unembedding(final_norm(h))``, with the final-logit soft-capping of
  Gemma-2 style configs, so at l = L the lens is the model's own output;
* tied embeddings need nothing special: ``get_output_embeddings()`` is the tied matrix;
* bf16 checkpoints are loaded straight into ``DTYPE`` (float32 by default, so a CPU computes in
  fp32) in one pass (``low_cpu_mem_usage``: no second copy of the weights).

Layers, final norm: the ``nn.ModuleList`` of ``num_hidden_layers`` decoder layers and the norm
that follows it (``model.norm``, ``transformer.ln_f``, ``final_layer_norm``, ...).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from eval.rundir import EvalError

DTYPES = ("float32", "bfloat16", "float16")
"""``DTYPE=`` values (torch dtype names); torch is imported only to load a model."""
_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve(spec: str) -> tuple[str, str, dict]:
    """``MODEL`` -> (what ``from_pretrained`` loads, a name for ``runs/hf/<name>``, our export's
    ``export.json`` or ``{}``). Checked without importing torch models."""
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        if not path.is_dir():
            raise EvalError(f"MODEL={spec}: no such folder (a local HF model folder or a hub id)")
        if not (path / "config.json").is_file():
            raise EvalError(f"MODEL={spec}: {path} has no config.json; is it a HF model folder?")
        record = path / "export.json"
        export = json.loads(record.read_text()) if record.is_file() else {}
        name = path.resolve().name
        if export.get("run"):
            name = f"{Path(export['run']).name}-{name}"
        return str(path.resolve()), name, export
    if not _HUB_ID.match(spec):
        raise EvalError(f"MODEL={spec!r} is neither a local folder nor a hub id like org/name")
    return spec, spec.rsplit("/", 1)[-1], {}


def hub_hint(spec: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = "the Hugging Face cache (HF_HOME)" + ("" if offline else " or hub")
    return (
        f"cannot load MODEL={spec} from {where}; on a machine without internet download it on "
        "one that has it, then set HF_HUB_OFFLINE=1 with that cache, or pass a local folder"
    )


def load(spec: str, dtype: str, dev):
    """(model in eval mode on ``dev``, its tokenizer or None)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    local = Path(spec).is_dir()
    try:
        config = AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as err:
        if local:
            raise EvalError(f"MODEL={spec}: unreadable config.json ({err})") from None
        raise EvalError(hub_hint(spec)) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            spec, config=config, dtype=getattr(torch, dtype), low_cpu_mem_usage=True
        )
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvalError(f"MODEL={spec}: cannot load the weights ({first})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return model.to(dev).eval(), tokenizer


def decoder_stack(base, num_layers: int) -> tuple:
    """(the module holding the decoder layers, the attribute name of their ``nn.ModuleList``, the
    final norm next to it) of a HF base model with ``num_layers`` layers."""
    import torch

    for owner in base.modules():
        for name, child in owner.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == num_layers:
                norm = next((getattr(owner, n) for n in _NORM_NAMES if hasattr(owner, n)), None)
                if norm is None:
                    raise EvalError(f"{type(base).__name__}: no final norm next to {name}")
                return owner, name, norm
    raise EvalError(f"{type(base).__name__}: no list of {num_layers} decoder layers")


class HFAdapter:
    """Residual stream and head of a loaded HF causal LM."""

    def __init__(self, model):
        self.model = model
        config = model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.num_layers = text_config.num_hidden_layers
        self.softcap = getattr(text_config, "final_logit_softcapping", None)
        self.unembed = model.get_output_embeddings()
        self.dtype = self.unembed.weight.dtype
        owner, name, self.norm = decoder_stack(model.base_model, self.num_layers)
        self.layers = list(getattr(owner, name))

    def head(self, h_nh):
        """Logits of states ``[n, hidden]`` (final norm, unembedding, soft-capping)."""
        import torch

        logits = self.unembed(self.norm(h_nh.to(self.dtype))).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def hidden_states(self, batch: dict) -> list:
        """h_0..h_L, each ``[b, s, hidden]`` (no autograd)."""
        import torch

        captured = {}

        def pre_hook(module, args, kwargs):
            captured[0] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        def hook(index):
            def fn(module, args, output):
                captured[index] = output[0] if isinstance(output, tuple) else output

            return fn

        handles = [self.layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
        handles += [layer.register_forward_hook(hook(i + 1)) for i, layer in enumerate(self.layers)]
        try:
            with torch.no_grad():
                self.model.base_model(
                    input_ids=batch["tokens"], position_ids=batch["position_ids"], use_cache=False
                )
        finally:
            for handle in handles:
                handle.remove()
        if sorted(captured) != list(range(self.num_layers + 1)):
            raise RuntimeError(
                f"hooks saw states {sorted(captured)}, expected 0..{self.num_layers}"
            )
        return [captured[i] for i in range(self.num_layers + 1)]
