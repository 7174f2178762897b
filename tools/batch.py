"""What the batch commands (bench, campaign) share around their work: a work directory that
--keep leaves in place and that is removed otherwise, and the close: the result printed,
written as JSON with --json, made the exit status."""
from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def workdir(keep: str | None, prefix: str):
    """DIR of --keep DIR (made if missing, left afterwards), else a fresh temporary
    directory removed when the block ends, however it ends."""
    import shutil
    import tempfile

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def finish(result: dict, show, json_path: str | None, failed: bool) -> int:
    """show(result) prints it; json_path (--json) gets it as JSON. The exit status: 1 if
    failed, else 0."""
    show(result)
    if json_path:
        import json

        Path(json_path).write_text(json.dumps(result, indent=1) + "\n")
    return 1 if failed else 0
