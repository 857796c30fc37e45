"""`python -m services.trainer`: run the trainer's Faust worker."""

from __future__ import annotations

import faust

from services.trainer.app import create_app
from services.trainer.settings import TrainerSettings
from shared.logging import configure_logging
from shared.runtime import tune_collector


def main() -> None:
    settings = TrainerSettings()
    configure_logging("trainer", level=settings.log_level, fmt=settings.log_format)
    tune_collector(settings)
    worker = faust.Worker(create_app(settings), loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
