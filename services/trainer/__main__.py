"""`python -m services.trainer`: run the trainer's Faust worker."""

from __future__ import annotations

import faust

from services.trainer.app import create_app
from services.trainer.settings import TrainerSettings
from shared.logging import configure_logging


def main() -> None:
    settings = TrainerSettings()
    configure_logging("trainer", level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings)
    worker = faust.Worker(
        app, loglevel=settings.log_level.upper(), web_port=settings.port, web_host=settings.host
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
