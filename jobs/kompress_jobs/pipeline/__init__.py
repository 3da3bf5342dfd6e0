"""The optimization pipeline: load, run the passes, tune, evaluate, benchmark, select, profile,
report and publish (run.py); the candidates it carries (candidates.py) and the stages a causal
language model runs instead (language_model.py)."""
