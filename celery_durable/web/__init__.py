"""The console: ``celery -A proj durable ui``, or an ASGI app to mount in your own site.

Install it with ``pip install 'celery-durable[ui]'`` (Starlette, Jinja2, uvicorn)::

    from celery_durable.web import create_app
    console = create_app(celery_app, token="...", read_only=False)

It shows invocations and their journals, and operates them through the same functions
as the ``celery durable`` commands (``celery_durable.admin``).
"""

from celery_durable.web.app import create_app
from celery_durable.web.security import TOKEN_ENV

__all__ = ["TOKEN_ENV", "create_app"]
