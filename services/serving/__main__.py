"""`python -m services.serving`: run the serving API with uvicorn, configured by environment."""

from __future__ import annotations

import uvicorn

from services.serving.app import create_app
from services.serving.settings import ServingSettings
from shared.logging import configure_logging


def main() -> None:
    settings = ServingSettings()
    configure_logging("serving", level=settings.log_level, fmt=settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
