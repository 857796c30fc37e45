"""`python -m services.governance`: run the governance API on its configured host and port."""

from __future__ import annotations

from services.governance.app import create_app
from services.governance.settings import GovernanceSettings
from shared.http import serve
from shared.logging import configure_logging
from shared.runtime import tune_collector


def main() -> None:
    settings = GovernanceSettings()
    configure_logging("governance", level=settings.log_level, fmt=settings.log_format)
    tune_collector(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
