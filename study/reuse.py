"""Results that accumulate: planned trials that already finished in earlier studies are linked, not retrained.

``geotune run SPACE --reuse OLD_STUDY...`` compares each planned trial's resolved
config (every key, the seed included) with the ``config.yaml`` of every finished
trial of the given studies. A match is not trained again: the new study gets a
folder ``reused_<label>`` with its own ``params.json`` (the new plan's label) and
symbolic links to the old trial's files, and ``reused_from.txt`` naming that
folder; ``study.json`` lists them under ``reused``. So a grid can be extended with
new values, or given more seeds, while the report covers every trial.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from geotune.config import TrialConfig
from geotune.errors import ConfigError
from geotune.layout import (
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    METRICS_FILE,
    PARAMS_FILE,
    REUSED_FILE,
    REUSED_PREFIX,
    StudyPlan,
    TrialStatus,
    finished_status,
    read_json,
    write_json,
)
from geotune.storage import is_uri
from geotune.study.cluster import notice
from geotune.variants import folder_label

REUSABLE = (TrialStatus.COMPLETED, TrialStatus.EARLY_STOP)  # a trial ASHA cut short answers another question


def config_key(config: dict) -> str:
    """A resolved config as one comparable string (every key, the seed included, but the trackers it was logged
    to: logging.loggers changes where a trial is reported, not what it computes)."""
    resolved = TrialConfig.from_dict(config).to_dict()
    resolved["logging"].pop("loggers", None)
    return json.dumps(resolved, sort_keys=True, default=str)


def finished_trials(study_dir: Path) -> dict[str, Path]:
    """The finished trials of a study folder (or of a `geotune train` folder), by their resolved config."""
    out: dict[str, Path] = {}
    for folder in sorted(p for p in study_dir.iterdir() if (p / PARAMS_FILE).is_file()):
        metrics = read_json(folder / METRICS_FILE)
        if not metrics or finished_status(metrics) not in REUSABLE or not (folder / CONFIG_FILE).is_file():
            continue
        try:
            config = yaml.safe_load((folder / CONFIG_FILE).read_text())
            out.setdefault(config_key(config), folder.resolve())
        except (ConfigError, yaml.YAMLError, OSError, TypeError):
            continue  # a config an older or newer geotune wrote differently cannot be the same trial
    return out


def find_reusable(plan: StudyPlan, study_dirs: list[str]) -> dict[str, str]:
    """Variant label -> the finished trial folder each reusable planned trial is taken from."""
    if plan.optuna:
        raise ConfigError(f"--reuse: space '{plan.space}' is an Optuna search; --reuse works with grids and sweeps")
    found: dict[str, Path] = {}
    for text in study_dirs:
        folder = Path(text).expanduser()
        if is_uri(text) or not folder.is_dir():
            raise ConfigError(f"--reuse '{text}': not a local study folder")
        if folder.resolve() == Path(plan.study_dir).resolve():
            raise ConfigError(f"--reuse '{text}': that is the new study's own folder")
        trials = finished_trials(folder)
        if not trials and not any((p / PARAMS_FILE).is_file() for p in folder.iterdir()):
            raise ConfigError(f"--reuse '{text}': holds no trials (no */{PARAMS_FILE})")
        for key, path in trials.items():
            found.setdefault(key, path)
    reused = {}
    for label, config in plan.trial_configs().items():
        key = config_key(config)
        if key in found:
            reused[label] = str(found[key])
    notice(f"--reuse: {len(reused)} of {plan.trial_count} planned trials finished before and are not trained again")
    return reused


def link_reused(plan: StudyPlan, reused: dict[str, str]) -> None:
    """Give each reused trial a folder in the new study: its params, links to the old files, and where from."""
    plan.reused = dict(reused)
    variants = plan.variants_by_label()
    for label, source in reused.items():
        folder = Path(plan.study_dir) / f"{REUSED_PREFIX}{folder_label(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(Path(source).iterdir()):
            if path.name in (PARAMS_FILE, REUSED_FILE) or path.name.startswith((CHECKPOINT_PREFIX, ".")):
                continue
            (folder / path.name).symlink_to(path.resolve(), target_is_directory=path.is_dir())
        write_json(folder / PARAMS_FILE, {"variant": label, **variants[label]})
        (folder / REUSED_FILE).write_text(str(source) + "\n")
    plan.save()
