"""Screenshots of report pages in headless chromium, for the README.

    python tools/screenshot.py runs/digits/csnn-loihi2-8b/report.html runs/digits/mlp-sweep/sweep.html

writes docs/images/<page>.png (the top of each page, as a browser opening it from disk shows it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", type=Path, help="report.html or sweep.html files")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    parser.add_argument("--size", default="1300,1600", help="window width,height in pixels (default 1300,1600)")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        for page in args.pages:
            target = args.out / f"{page.stem}.png"
            subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={args.size}",
                            f"--screenshot={target}", page.resolve().as_uri()], check=True, capture_output=True,
                           timeout=120)
            print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
