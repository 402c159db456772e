"""Offline analysis, HF export and lm-eval evaluation of pretraining runs (``python -m eval``).

Everything here reads a run directory written by ``make pretrain`` (``command.txt``,
``launch.json``, ``metrics.jsonl``, ``checkpoints/iter_*``) and writes its own files next to it:
``analysis.jsonl`` (one line per checkpoint), ``plots/*.png``, ``hf/iter_*/`` (a
``LlamaForCausalLM`` folder) and ``lm_eval/`` (``iter_*/`` per checkpoint, ``model-*/`` per
baseline, ``scores.*`` over them). Models and metrics come from the same functions as training (``megatron_ext``), never from
a second implementation.

Modules: ``rundir`` (what a run directory holds), ``cli`` (``KEY=value`` settings),
``megatron_io`` (one-process Megatron: model, checkpoint, batches), ``sequences`` (token
sequences: a run's GPTDataset, dataset folders, text files), ``stats`` (every analysis statistic
from h_0..h_L and a head, for both sources), ``probe`` (the Megatron adapter), ``hf_model`` (the
Hugging Face adapter), ``activations`` (massive activations and voids) and ``depth`` (decision
depth), pure functions, ``analyze``, ``analyze_hf`` (``make analyze MODEL=``), ``plots``,
``plots_depth`` (figures on a normalised depth axis), ``figures`` (the backend and panel style
they share), ``scores`` (the task x checkpoint table), ``score_log`` (scores into the run's
TensorBoard and W&B run), ``convert`` (the Megatron -> HF Llama mapping), ``export``,
``export_tokenizer`` (the export's tokenizer follows the data's BOS decision), ``taskdata``
(lm-eval data from the held-out split), ``lm_models`` (what lm-eval scores and HFLM's settings),
``console_log`` (library output to the log) and ``harness`` (lm-eval).
"""
