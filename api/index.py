"""Vercel entry point: the combined producer + worker app (reads settings, connects nothing)."""

from lib.app.asgi import create_deploy_app

app = create_deploy_app()
