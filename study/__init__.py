"""``make study``: train the study recipe with and without JREG, analyse, evaluate, report.

Modules: ``settings`` (``KEY=value`` settings, the planned runs), ``runner`` (the stages as
subprocesses of ``python -m launcher`` and ``python -m eval``, resumable), ``collect``
(numbers from the run files), ``reading`` (the rules that turn them into sentences), ``figures``
and ``report`` (docs/study.md).
"""
