"""Model sizes and training recipes, each written as a small difference from a base; the one
table of sizes (shape + schedule + GPU layout) is ``recipes.sizes``."""

from recipes.sizes import (
    CONTINUED,
    SIZES,
    Size,
    model_recipe,
    parallel_defaults,
    size_recipe,
    train_recipe,
)

__all__ = [
    "CONTINUED",
    "SIZES",
    "Size",
    "model_recipe",
    "parallel_defaults",
    "size_recipe",
    "train_recipe",
]
