"""The names under which hpsearch stores what it knows on studies and trials.

They are Optuna user (and system) attributes, in Optuna's ``"study:metric_names"`` style.
Existing study databases depend on them: a value here is never renamed.
"""

from __future__ import annotations

# Trial user attributes: why a trial ended.
FAIL_REASON = "hpsearch:fail_reason"
"""``preempted``, ``timeout``, ``oom``, ``nan``, ``budget`` or ``exception``."""
ERROR = "hpsearch:error"
"""The failure's message, one line."""

# Trial user attributes: what it measured.
TEST_ACCURACY = "hpsearch:test_accuracy"
TEST_SKIPPED = "hpsearch:test_skipped"
"""Why a complete trial has no test accuracy (``objective.test_top``), one line."""
EPOCHS = "hpsearch:epochs"
WALL_TIME_S = "hpsearch:wall_time_s"
N_PARAMS = "hpsearch:n_params"
CONFIG = "hpsearch:config"
SEED = "hpsearch:seed"
KERAS_BACKEND = "hpsearch:keras_backend"
WARM_START = "hpsearch:warm_start"
WARM_START_FROM = "hpsearch:warm_start_from"
"""``study#trial`` of the earlier study a ``from_study`` warm-start trial came from."""

# Trial user attributes: where it ran (hpsearch.env.where_am_i).
HOST = "hpsearch:host"
PID = "hpsearch:pid"
GPU = "hpsearch:gpu"
SLURM_JOB_ID = "hpsearch:slurm_job_id"
SLURM_ARRAY_TASK_ID = "hpsearch:slurm_array_task_id"

# Study attributes.
SPEC = "hpsearch:spec"
SPEC_TOML = "hpsearch:spec_toml"
FINGERPRINT = "hpsearch:fingerprint"
DATASET = "hpsearch:dataset"
VERSION = "hpsearch:version"
RETRAIN_PREFIX = "hpsearch:retrain:"
"""``hpsearch:retrain:<trial number>``: that trial's re-training figures (``best --seeds``)."""


def where(key: str) -> str:
    """The trial attribute for one of :func:`hpsearch.env.where_am_i`'s keys (``host`` ...)."""
    return f"hpsearch:{key}"


def test_metric(name: str) -> str:
    """The trial attribute for a test figure of the objective's metric (``test_auc`` ...)."""
    return f"hpsearch:test_{name}"
