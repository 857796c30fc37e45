"""`python -m services.serving`: run the serving API on its configured host and port."""

from __future__ import annotations

from services.serving.app import create_app
from services.serving.settings import ServingSettings
from shared.http import serve
from shared.logging import configure_logging
from shared.runtime import tune_collector


def main() -> None:
    settings = ServingSettings()
    configure_logging("serving", level=settings.log_level, fmt=settings.log_format)
    tune_collector(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
