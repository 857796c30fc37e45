"""`python -m services.ingest`: run the ingest service on its configured host and port."""

from __future__ import annotations

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.http import serve
from shared.logging import configure_logging
from shared.runtime import tune_collector


def main() -> None:
    settings = IngestSettings()
    configure_logging("ingest", level=settings.log_level, fmt=settings.log_format)
    tune_collector(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
