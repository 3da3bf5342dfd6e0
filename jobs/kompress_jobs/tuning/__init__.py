"""Hyperparameter tuning with Optuna: the search space (search_space.py), a study in one Pod
(study.py) or shared by worker Pods (parallel_study.py, study_storage.py), and its report (study_report.py)."""
