import os

# Megatron processes recompile ~3,500 modules per start when this is set (as on CI machines).
os.environ["PYTHONDONTWRITEBYTECODE"] = ""
os.environ.setdefault("OMP_NUM_THREADS", "1")
