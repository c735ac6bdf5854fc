"""`python -m service`: check the model, then serve it with uvicorn on HOST:PORT.

The model is loaded (and warmed up) before the server starts, so a missing or unusable model
stops the process at once with one clear message and a non-zero exit status, not a traceback.
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app, load_model
from service.model import ModelError
from service.settings import Settings

EXIT_CONFIGURATION = 2


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"error: bad configuration in the environment:\n{error}", file=sys.stderr)
        return EXIT_CONFIGURATION
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    try:
        model = load_model(settings)
    except ModelError as error:
        print(f"error: cannot serve the model: {error}", file=sys.stderr)
        return EXIT_CONFIGURATION

    uvicorn.run(
        create_app(settings, model=model),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
