"""trackio, local and offline: one project per matrix, one trackio run per matrix entry.

Logs the same rows as metrics.jsonl (train, eval, and system samples on trackio's System
Metrics tab). TRACKIO_DIR points at results/trackio unless the config says otherwise;
`make dashboard` serves it on localhost.
"""
from __future__ import annotations

import os
import warnings


class Tracker:
    def __init__(self, cfg):
        os.environ["TRACKIO_DIR"] = cfg.trackio_dir          # read when trackio is imported
        os.makedirs(cfg.trackio_dir, exist_ok=True)
        import trackio
        self.trackio = trackio
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # keep the Run: trackio's module-level log() finds it through a ContextVar,
            # which the monitor thread does not share
            self.run = trackio.init(project=cfg.trackio_project, name=os.path.basename(cfg.out_dir),
                         config=cfg.semantic_dict(), resume="allow", embed=False,
                         auto_log_gpu=False, auto_log_cpu=False)

    def log(self, row: dict) -> None:
        kind = row.get("kind", "train")
        values = {f"{kind}/{k}": v for k, v in row.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        if kind == "system":
            self.run.log_system(values)
        elif values:
            self.run.log(values, step=row.get("step"))

    def finish(self) -> None:
        self.run.finish()


def open_run(cfg):
    if not cfg.trackio:
        return None
    try:
        return Tracker(cfg)
    except Exception as e:  # tracking must never take a training run down
        print(f"warning: trackio disabled for this run ({type(e).__name__}: {e})", flush=True)
        return None
