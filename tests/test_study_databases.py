"""Each namespace's parallel studies in a role and schema of its own, on a real PostgreSQL: team B's
credentials cannot read or change team A's study (before: one shared URL reached every study)."""

from __future__ import annotations

import optuna
import psycopg
import pytest

from kompress_jobs.tuning.study_storage import TrialSlot, open_storage
from kompress_operator.study_databases import StudyDatabaseError, StudyDatabases, role_name

pytestmark = pytest.mark.pipeline


def test_a_namespaces_credentials_reach_its_own_studies_only(postgres):
    databases = StudyDatabases(postgres.new_database("per_namespace"))
    team_a, team_b = databases.ensure("team-a"), databases.ensure("team-b")
    assert databases.ensure("team-a") == team_a, "made again, the same role and password: nothing to store"
    assert "kompress_team_a:" in team_a and postgres.url.split("@")[0].split(":")[-1] not in team_a

    study = optuna.create_study(study_name="team-a/model/studies/abc", storage=open_storage(team_a, 30))
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 2), n_trials=1)

    # team B sees no study, and the database refuses it team A's tables, to read or to change
    assert optuna.get_all_study_names(storage=open_storage(team_b, 30)) == []
    with psycopg.connect(team_b, autocommit=True) as connection:
        for statement in ("SELECT * FROM kompress_team_a.studies", "DELETE FROM kompress_team_a.trials",
                          "CREATE TABLE kompress_team_a.planted (x int)", "CREATE TABLE public.planted (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)
    assert optuna.load_study(study_name="team-a/model/studies/abc", storage=open_storage(team_a, 30)).best_value == 1.0


def test_study_locks_are_keyed_by_the_whole_study_name(postgres):
    storage = open_storage(postgres.new_database("locks"), 30)
    first, second = TrialSlot(storage, "team-a/m/studies/d"), TrialSlot(storage, "team-b/m/studies/d")
    assert first.key != second.key and -(2**63) <= first.key < 2**63


def test_role_names_are_identifiers_of_at_most_63_bytes_one_per_namespace():
    assert role_name("team-a") == "kompress_team_a"
    long = "n" * 60 + "-a"
    assert len(role_name(long)) == 63 and role_name(long) != role_name("n" * 60 + "-b")


def test_an_unreachable_administrator_database_names_the_server_not_the_password(postgres):
    databases = StudyDatabases(f"postgresql://kompress:hunter2-secret@127.0.0.1:{postgres.port + 1}/studies", connect_timeout=2)
    with pytest.raises(StudyDatabaseError, match=rf"127.0.0.1:{postgres.port + 1}/studies") as failed:
        databases.ensure("team-a")
    assert "hunter2" not in str(failed.value)
