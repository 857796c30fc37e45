"""`python -m services.ingest`: run the ingest service on its configured host and port."""

from __future__ import annotations

import sys

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.http import serve
from shared.logging import configure_logging
from shared.runtime import tune_collector
from shared.tasks import SpecFileError, load_specs


def main() -> None:
    settings = IngestSettings()
    configure_logging("ingest", level=settings.log_level, fmt=settings.log_format)
    tune_collector(settings)
    try:  # a bad spec file is one line naming it, before the server starts
        found = load_specs(settings.tasks_dir)
    except SpecFileError as exc:
        sys.exit(f"ingest: task spec refused: {exc}")
    if not found:
        sys.exit(f"ingest: no task specs (*.yaml) in {settings.tasks_dir}")
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
