"""Where the labelled face datasets live: `$ONESHOT_DATA`, else `../shared/datasets` beside the checkout."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path | None:
    """The datasets folder, or None when this machine has none (tests then skip, saying so)."""
    env = os.environ.get("ONESHOT_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "datasets")
    for path in candidates:
        if (path / "lfw" / "manifest.csv").is_file():
            return path
    return None


def teachers_root() -> Path | None:
    """The pretrained IR networks (`$ONESHOT_TEACHERS`, else `../shared/teachers`), or None when absent."""
    env = os.environ.get("ONESHOT_TEACHERS")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "teachers")
    for path in candidates:
        if (path / "face-reidentification-retail-0095").is_dir():
            return path
    return None
