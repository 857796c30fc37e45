"""`python -m services.ingest`: run the ingest service with uvicorn on its host and port."""

from __future__ import annotations

import uvicorn

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.logging import configure_logging


def main() -> None:
    settings = IngestSettings()
    configure_logging("ingest", level=settings.log_level, fmt=settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
