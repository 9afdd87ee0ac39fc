"""Download the wheels whose bundled data sets the ML tests read (``make test-data``).

* ``lifetimes`` 0.11.3 — CDNOW calibration summary (``lifetimes/datasets/``), the data of
  Fader, Hardie & Lee (2005).
* ``recbole`` 1.2.1 — MovieLens-100K (``recbole/dataset_example/ml-100k/``); its licence
  forbids redistribution, so it is read from the wheel at test time and never copied.

The wheels land in ``.cache/wheels/`` (git-ignored) and are never installed. Re-running is a
no-op when a wheel with the expected SHA-256 is present. Usage::

    python scripts/fetch_test_data.py [--dest .cache/wheels]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / ".cache" / "wheels"

# (requirement, wheel file name, sha256 of the PyPI file)
WHEELS = [
    (
        "lifetimes==0.11.3",
        "Lifetimes-0.11.3-py3-none-any.whl",
        "261e3dc89977c2b60767ca6728aaa29d429de0c814635070a749c36555895da8",
    ),
    (
        "recbole==1.2.1",
        "recbole-1.2.1-py3-none-any.whl",
        "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    ),
]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    failures = 0
    for requirement, filename, sha256 in WHEELS:
        target = dest / filename
        if target.exists() and _sha256(target) == sha256:
            print(f"ok       {filename}")
            continue
        print(f"download {requirement}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-d",
                str(dest),
                requirement,
            ],
            check=True,
        )
        if not target.exists() or _sha256(target) != sha256:
            print(f"error    {filename}: missing or SHA-256 mismatch", file=sys.stderr)
            target.unlink(missing_ok=True)
            failures += 1
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    return fetch(parser.parse_args(argv).dest)


if __name__ == "__main__":
    raise SystemExit(main())
