"""Model sizes and training recipes, each written as a small difference from a base."""

from recipes.models import SIZES, model_recipe

__all__ = ["SIZES", "model_recipe"]
