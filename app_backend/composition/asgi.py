"""The ASGI entry point Granian loads in every worker process."""

from app_backend.composition.app import create_app

app = create_app()
