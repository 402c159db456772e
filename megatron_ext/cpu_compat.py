"""Make megatron-core 0.19.2 run on a machine without a GPU (CPU tensors, gloo).

Megatron-Core assumes CUDA: it asks ``torch.cuda`` for devices, RNG states and streams, and a few
places allocate with a hard-coded ``device="cuda"``. This module is the project's ONLY monkeypatch
of torch or Megatron for CPU machines (``megatron_compat`` holds the workarounds every device
needs). ``enable()`` is a no-op when CUDA is available, idempotent, and must run
before Megatron builds anything. Every patch names its reason and the place in
megatron-core==0.19.2 that needs it; re-check them when the pin moves.

What CPU runs exercise exactly: sharding, schedules, DDP/optimizer and checkpoint logic over gloo.
What they cannot: Transformer Engine, FP8, fused CUDA kernels, NCCL, context parallelism (the
local attention asserts cp == 1) and GPU memory.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings

import torch

MEGATRON_CORE_VERSION = "0.19.2"
_enabled = False

# "cuda" random draws (e.g. the JIT warm-up in training/initialize.py:508) use their own
# generator: drawing them from the CPU default generator would make CPU-side model init depend on
# how many such draws happened, which differs with TP size.
_cuda_generator = torch.Generator()

_FACTORIES = (
    "zeros", "ones", "empty", "full", "tensor", "as_tensor", "arange", "linspace", "eye",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand", "randn", "randint", "randperm",
)  # fmt: skip
_RANDOM_FACTORIES = {"rand", "randn", "randint", "randperm"}


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, int):
        return True
    return torch.device(device).type == "cuda"


def _cpu_factory(fn, name):
    """Send ``device="cuda"`` allocations to the CPU.

    Needed by schedules.py:749,1121,2292 (total_num_tokens), transformer/utils.py:39,44 (causal
    mask), tensor_parallel/data.py:37, optimizer/clip_grads.py:96-231, optimizer/optimizer.py:315+,
    core/utils.py:1332, rerun_state_machine.py:268, training/training.py:1137,2613,2884,4270.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
            if name in _RANDOM_FACTORIES and kwargs.get("generator") is None:
                kwargs["generator"] = _cuda_generator
        return fn(*args, **kwargs)

    return wrapper


class _NoStream:
    """Stand-in for torch.cuda.Stream/Event: param_and_grad_buffer.py:632,686,691,814,
    distributed_data_parallel.py:297 and training.py:1876-1894 create streams and events."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def record_event(self, *args, **kwargs):
        return _NoStream()

    def record(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def _patch_torch() -> None:
    cuda = torch.cuda
    # torch.cuda.current_device() is used as a device argument everywhere (p2p buffers, grad
    # buffers, optimizer state); returning the CPU device makes those allocations land on CPU.
    cuda.current_device = lambda: torch.device("cpu")
    # initialize.py:358,447 creates the model-parallel groups and seeds the RNG tracker only when
    # device_count() > 0; with 0 those groups are silently missing (parallel_state.py:1752).
    cuda.device_count = lambda: 1
    cuda.set_device = lambda device: None
    # timers.py:152 and p2p_communication.py:263,419 call synchronize().
    cuda.synchronize = lambda device=None: None
    # RNG: the tracker (tensor_parallel/random.py:303-306) saves/restores the "cuda" RNG state
    # around each fork; on CPU the dropout RNG is the CPU default generator.
    cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    cuda.set_rng_state = lambda state, device="cuda": torch.set_rng_state(state)
    # NOT torch.manual_seed, which would recurse into torch.cuda.manual_seed_all.
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.manual_seed_all = cuda.manual_seed
    cuda.random.get_rng_state = cuda.get_rng_state
    cuda.random.set_rng_state = cuda.set_rng_state
    cuda.random.manual_seed = cuda.manual_seed
    cuda.Stream = _NoStream
    cuda.Event = _NoStream
    cuda.stream = lambda stream=None: _NoStream()
    cuda.current_stream = lambda device=None: _NoStream()
    cuda.default_stream = lambda device=None: _NoStream()
    for name in _FACTORIES:
        setattr(torch, name, _cpu_factory(getattr(torch, name), name))

    # `.cuda()` (data.py:84, training.py:1818 Module.cuda) and `.to("cuda")` stay on CPU.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    orig_to = torch.Tensor.to

    @functools.wraps(orig_to)
    def tensor_to(self, *args, **kwargs):
        if args and _is_cuda_arg(args[0]):
            args = ("cpu", *args[1:])
        if _is_cuda_arg(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return orig_to(self, *args, **kwargs)

    torch.Tensor.to = tensor_to

    # clip_grads.py:174, optimizer.py:1028 and distrib_optimizer.py:466 dispatch on the type
    # string 'torch.cuda.FloatTensor'; report CPU tensors under their CUDA names.
    orig_type = torch.Tensor.type

    @functools.wraps(orig_type)
    def tensor_type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and not kwargs:
            name = orig_type(self)
            return name.replace("torch.", "torch.cuda.", 1) if self.device.type == "cpu" else name
        return orig_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = tensor_type


def _is_cuda_arg(value) -> bool:
    if isinstance(value, str | torch.device):
        return torch.device(value).type == "cuda"
    return False


def _patch_megatron_core() -> None:
    import megatron.core.tensor_parallel.random as mrandom
    import megatron.core.transformer.torch_norm as torch_norm

    # random.py:143-174 sets the state through torch.cuda._lazy_call, which on a machine without a
    # GPU queues the callback forever (4 queued tracebacks per forward pass, and fork() never
    # switches the RNG). Route the tracker to the CPU generator directly.
    mrandom._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: (
        torch.get_rng_state()
    )
    mrandom._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: (
        torch.set_rng_state(new_state)
    )

    # torch_norm.py:50 asserts `not config.sequence_parallel` for the local (torch) norm, so
    # TP+SP cannot run without TE/Apex. Build the torch norm anyway and tag its parameters with
    # `sequence_parallel=True` like Apex's fused norm does, so that finalize_model_grads.py:452
    # all-reduces their gradients across TP.
    orig_new = torch_norm.WrappedTorchNorm.__new__

    def sp_capable_new(cls, config, hidden_size, eps=1e-5, **kwargs):
        if not config.sequence_parallel:
            return orig_new(cls, config, hidden_size, eps, **kwargs)
        config.sequence_parallel = False
        try:
            norm = orig_new(cls, config, hidden_size, eps, **kwargs)
        finally:
            config.sequence_parallel = True
        for param in norm.parameters():
            param.sequence_parallel = True
        return norm

    torch_norm.WrappedTorchNorm.__new__ = sp_capable_new


def _patch_distributed_optimizer() -> None:
    """Resuming with --use-distributed-optimizer and torch Adam (no Apex/TE, i.e. every CPU run).

    distrib_optimizer.py:839 reads each parameter's Adam ``step`` while building the state dict to
    load into; a fresh torch Adam has no state before its first step, so the assertion
    ``len(steps) == 1`` fails and no checkpoint can be resumed. Give empty states zeros and step 0
    first: exactly what the checkpoint then overwrites.
    """
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    orig_state_dict = DistributedOptimizer.state_dict

    def state_dict(self):
        inner = self.optimizer
        for group in inner.param_groups:
            for param in group["params"]:
                state = inner.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param.data)
                    state["exp_avg_sq"] = torch.zeros_like(param.data)
                if "step" not in state:
                    state["step"] = torch.tensor(0.0)
        return orig_state_dict(self)

    DistributedOptimizer.state_dict = state_dict

    # distrib_optimizer.py:1193-1224 then copies the loaded shards into the main params (fp32 on
    # CPU, where they are views of leaf parameters, so autograd refuses the in-place copy outside
    # no_grad) and into every tensor of the optimizer state, `step` included; the `step` handed
    # in is the placeholder of the load template (0), while the restored one is already in the
    # state (from the checkpoint's param groups, distrib_optimizer.py:1021), so keep that one.
    orig_set = DistributedOptimizer._set_main_param_and_optimizer_states

    def set_states(self, model_param, tensors):
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        state = self.optimizer.state[main_param]
        current = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        loaded = {k: v for k, v in tensors.items() if k != "step"}
        with torch.no_grad():
            orig_set(self, model_param, {**current, **loaded})

    DistributedOptimizer._set_main_param_and_optimizer_states = set_states

    # distrib_optimizer.py:1021-1027 gives every parameter's state the SAME `step` tensor, and
    # torch's Optimizer.load_state_dict keeps `step` values uncopied: torch Adam then increments
    # the shared counter once per parameter, so after a resume the bias correction uses
    # step ~ num_params x iterations. Give each parameter its own copy.
    orig_load = DistributedOptimizer.load_state_dict

    def load_state_dict(self, state_dict):
        result = orig_load(self, state_dict)
        for state in self.optimizer.state.values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].clone()
        return result

    DistributedOptimizer.load_state_dict = load_state_dict


def _patch_megatron_training() -> None:
    """Patches needed only by megatron.training's pretrain() loop."""
    from megatron.training import arguments, initialize, training

    # initialize.py:66 asserts CUDA unless allow_no_cuda=True; training.py:1091 calls it bare.
    orig_init = initialize.initialize_megatron
    training.initialize_megatron = functools.partial(orig_init, allow_no_cuda=True)
    # arguments.py:1414 asks the GPU architecture (CUDA_DEVICE_MAX_CONNECTIONS check) when TP>1.
    arguments.get_device_arch_version = lambda: 9
    # training.py:1117 -> initialize.py:473-558 warms up the torch.compile'd bias+SwiGLU/GeLU and
    # bias+dropout+add kernels: ~2 s of inductor per start. CPU runs switch those fusions off
    # (launcher/command.py: --no-bias-swiglu-fusion --no-bias-dropout-fusion; SwiGLU turns off
    # the GeLU one), so no step runs what the warm-up compiles; a run with a fusion on keeps it.
    orig_jit = training.set_jit_fusion_options

    def set_jit_fusion_options(*args, **kwargs):
        a = training.get_args()
        if a.bias_gelu_fusion or a.bias_swiglu_fusion or a.bias_dropout_fusion:
            orig_jit(*args, **kwargs)

    training.set_jit_fusion_options = set_jit_fusion_options


def _no_compile(model=None, **_kwargs):
    """``torch.compile``'s two call forms (``f`` and ``(**options)(f)``), compiling nothing."""
    return model if model is not None else (lambda fn: fn)


def _import_megatron_core_without_compile() -> None:
    """Import megatron.core with its JIT fuser off, as ``--disable-jit-fuser`` intends.

    core/jit.py:16-33 binds ``jit_fuser = torch.compile`` at import, and every ``@jit_fuser``
    function (fusions/fused_bias_*.py, transformer/utils.py, ...) then imports torch._dynamo and
    inductor: ~2.3 s of every CPU process's ~6.5 s import, for kernels a CPU run either never calls
    (the bias fusions are off) or would compile to C++ that proves nothing about a GPU. Megatron's
    own switch (training/global_vars.py:156-157, ``disable_jit_fuser``) comes after the import, too
    late for both. torch.compile is ours again once megatron.core is imported, so code that compiles
    on purpose (bench's fused displacement) still does; jit.py's ``noop_decorator`` stays the fuser
    of megatron modules imported later.
    """
    if "megatron.core" in sys.modules:
        return
    real_compile = torch.compile
    torch.compile = _no_compile
    try:
        from megatron.core import jit
    finally:
        torch.compile = real_compile
    jit.disable_jit_fuser()


def enable(training: bool = False) -> bool:
    """Apply the CPU shims when no GPU is present. Returns True when they are active.

    Args:
        training: also patch megatron.training (for the ``pretrain()`` loop).
    """
    global _enabled
    if torch.cuda.is_available():
        return False
    if not _enabled:
        _import_megatron_core_without_compile()
        from megatron.core import package_info

        if package_info.__version__.split("+")[0] != MEGATRON_CORE_VERSION:
            warnings.warn(
                f"megatron_ext.cpu_compat was written for megatron-core=={MEGATRON_CORE_VERSION}, "
                f"found {package_info.__version__}: re-check every patch's line reference",
                stacklevel=2,
            )
        os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")
        _patch_torch()
        _patch_megatron_core()
        _patch_distributed_optimizer()
        _enabled = True
    if training and not getattr(enable, "_training", False):
        _patch_megatron_training()
        enable._training = True
    return True


def is_enabled() -> bool:
    """True when the CPU shims are active in this process."""
    return _enabled
