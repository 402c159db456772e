"""Model shapes: a Llama-3-style base and the few fields each size changes (the size table that
names them is ``recipes.sizes``).

Shapes follow the Llama 3 / 3.2 family where one exists (1b, 3b, 8b); 125m and 350m are the usual
GPT-3-style small widths with Llama's architecture; ``tiny`` is the CPU test and laptop default, ``study`` a deeper, narrower tiny for the jump study.
"""

from __future__ import annotations

from megatron_ext.config import LlamaConfig


def base() -> LlamaConfig:
    """Llama 3 architecture defaults (RoPE base 500k, GQA, std 0.02); sizes override shapes."""
    return LlamaConfig(
        num_layers=16,
        hidden_size=2048,
        ffn_hidden_size=8192,
        num_attention_heads=32,
        num_query_groups=8,
        seq_length=4096,
        rotary_base=500_000,
        init_method_std=0.02,
        norm_epsilon=1e-5,
    )


def tiny() -> LlamaConfig:
    """4 layers, h=128: CPU tests and the `make pretrain` default (~1.4M non-embedding params)."""
    return base().replace(
        num_layers=4, hidden_size=128, ffn_hidden_size=384, num_attention_heads=4,
        num_query_groups=2, seq_length=128, rotary_base=10_000,
    )  # fmt: skip


def study() -> LlamaConfig:
    """The study's shape (`make study`, docs/study.md): 12 layers of half tiny's width (h=64, two
    heads of 32). Of the pilots (8 x 128, 12 x 128, 12 x 64; docs/study.md) only this one showed
    the last layer's displacement overtaking the one before it. The one place to change it."""
    return tiny().replace(
        num_layers=12, hidden_size=64, ffn_hidden_size=192, num_attention_heads=2,
        num_query_groups=2,
    )  # fmt: skip


def llama_125m() -> LlamaConfig:
    """12 x 768, GPT-3 Small width."""
    return base().replace(
        num_layers=12, hidden_size=768, ffn_hidden_size=2048, num_attention_heads=12,
        num_query_groups=4, seq_length=2048,
    )  # fmt: skip


def llama_350m() -> LlamaConfig:
    """24 x 1024, GPT-3 Medium width."""
    return base().replace(
        num_layers=24, hidden_size=1024, ffn_hidden_size=2816, num_attention_heads=16,
        num_query_groups=4, seq_length=2048,
    )  # fmt: skip


def llama_1b() -> LlamaConfig:
    """Llama 3.2 1B shape: 16 x 2048, ffn 8192, 32 heads, 8 KV heads (the base)."""
    return base()


def llama_3b() -> LlamaConfig:
    """Llama 3.2 3B shape: 28 x 3072, ffn 8192, 24 heads, 8 KV heads."""
    return base().replace(num_layers=28, hidden_size=3072, num_attention_heads=24)


def llama_8b() -> LlamaConfig:
    """Llama 3 8B shape: 32 x 4096, ffn 14336, 32 heads, 8 KV heads, seq 8192."""
    return base().replace(num_layers=32, hidden_size=4096, ffn_hidden_size=14336, seq_length=8192)
