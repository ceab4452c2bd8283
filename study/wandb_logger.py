"""W&B at a study's end (imported only for --logger wandb: wandb is an optional dependency).

Ray's WandbLoggerCallback logs params and per-epoch metrics while trials run, one W&B run per trial whose id
is the Tune trial id. A trial's final files (metrics, figures, the kept model) are written as it ends, and
for trials ASHA stopped only when the study ends, so each folder is added afterwards: the run is resumed by
its id (which every row of the folder's result.json carries) and the folder logged as one artifact.
"""

from __future__ import annotations

from pathlib import Path

from geotune.layout import PARAMS_FILE, RESULT_FILE, artifact_paths, read_last_json_line


def log_folders_as_artifacts(project: str, group: str, wandb_dir: Path, study_dir: Path) -> int:
    """Each trial folder of ``study_dir`` (checkpoints left out) as an artifact of its W&B run. Returns how
    many runs received one."""
    import wandb  # deferred: wandb is optional (extra [wandb]); every geotune module imports without it

    logged = 0
    for folder in sorted(p for p in study_dir.iterdir() if (p / PARAMS_FILE).is_file()):
        last = read_last_json_line(folder / RESULT_FILE) or {}
        trial_id = last.get("trial_id")
        if not trial_id:  # never reported: Ray's callback made no run for it
            continue
        run = wandb.init(id=trial_id, project=project, group=group, dir=str(wandb_dir), resume="allow")
        artifact = wandb.Artifact(name=f"trial-{trial_id}", type="trial", metadata={"folder": folder.name})
        for path in artifact_paths(folder):
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            else:
                artifact.add_file(str(path))
        run.log_artifact(artifact)
        run.finish()
        logged += 1
    return logged
