"""Small helpers every package of the repo shares (launcher, megatron_ext, recipes, eval, study,
data_prep): file rules of a run directory and ``KEY=value`` settings. Imports nothing of the
project, so any package may use it without importing another."""
