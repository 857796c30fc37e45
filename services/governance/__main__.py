"""`python -m services.governance`: run the governance API."""

from __future__ import annotations

import uvicorn

from services.governance.app import create_app
from services.governance.settings import GovernanceSettings
from shared.logging import configure_logging


def main() -> None:
    settings = GovernanceSettings()
    configure_logging("governance", level=settings.log_level, fmt=settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
