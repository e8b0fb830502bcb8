"""``python -m examples.fastapi_app``: build the page, start the app, serve both.

With no ``DATABASE_URL`` the app runs on pgpulse's embedded PostgreSQL, kept
in ``--data-dir`` between runs. The page is built with Vite from
``page/`` (Node.js 20+ and npm; ``npm ci`` in ``clients/web`` the first
time) unless ``--page-dir`` names one already built.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import uvicorn

from .app import Config, create_app

HERE = Path(__file__).resolve().parent
WEB_CLIENT = HERE.parent.parent / "clients" / "web"
BUILT_PAGE = HERE / "page" / "dist"


def default_data_dir() -> Path:
    """Beside ``pgpulse serve``'s, never inside it: the example's tables are its own.

    As root, the embedded PostgreSQL needs a folder whose parents other users
    may list, hence ``/var/lib`` rather than ``/root``.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/pgpulse-example")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pgpulse-example"


def build_page() -> Path:
    """Build ``page/`` into ``page/dist`` with the web client's Vite."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("building the page needs Node.js 20+ and npm (or pass --page-dir)")
    if not (WEB_CLIENT / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB_CLIENT, check=True)
    subprocess.run([npm, "run", "--silent", "build:example"], cwd=WEB_CLIENT, check=True)
    return BUILT_PAGE


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.fastapi_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the embedded PostgreSQL's folder when DATABASE_URL is unset "
        f"(default: {default_data_dir()})",
    )
    parser.add_argument("--page-dir", type=Path, default=None, help="a page already built")
    parser.add_argument(
        "--no-worker", action="store_true", help="run jobs in `pgpulse worker` instead"
    )
    args = parser.parse_args()

    database_url = os.environ.get("DATABASE_URL") or None
    if database_url is None:
        data_dir = args.data_dir or Path(os.environ.get("PGPULSE_DATA_DIR") or default_data_dir())
        os.environ["PGPULSE_DATA_DIR"] = str(data_dir)  # where pgpulse keeps its embedded database
    page_dir = args.page_dir or build_page()
    if not (page_dir / "index.html").is_file():
        sys.exit(f"no index.html in {page_dir}")
    # Sessions are signed with this key; a new one each start signs everyone out.
    key = os.environ.get("EXAMPLE_SECRET_KEY")
    secret_key = key.encode() if key else secrets.token_bytes(32)
    app = create_app(
        Config(
            database_url=database_url,
            secret_key=secret_key,
            page_dir=page_dir,
            run_worker=not args.no_worker,
        )
    )
    print(f"pgpulse FastAPI example: http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
