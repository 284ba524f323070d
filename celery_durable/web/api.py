"""The console's JSON API, in the shapes of ``celery durable ... --json``, and ``/metrics``.

- ``GET /api/invocations?status=&task=&limit=``: what ``ls --json`` prints, a list of
  invocation records (journals included) newest first; ``limit`` up to 1000, 50 by default.
- ``GET /api/invocation?id=``: what ``show --json`` prints; 404 when none is kept.
- ``GET /api/counts``: ``{"running": n, "suspended": n, "paused": n}``.
- ``GET /metrics``: the same counts in Prometheus text.

With ``--hide-values`` the records carry shapes for values and no error messages.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from celery_durable import admin
from celery_durable.web import present
from celery_durable.web.console import Console


def routes(console: Console) -> list[BaseRoute]:
    def record(data: dict[str, Any]) -> dict[str, Any]:
        return present.hidden_record(data) if console.hide_values else data

    def invocations(request: Request) -> Response:
        query = request.query_params
        try:
            limit = int(query.get("limit", "50"))
            found = admin.list_invocations(
                console.celery_app,
                status=query.get("status") or None,
                limit=limit,
                task_name=query.get("task") or None,
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse([record(inv.as_dict()) for inv in found])

    def invocation(request: Request) -> Response:
        task_id = request.query_params.get("id", "")
        inv = admin.get_invocation(console.celery_app, task_id) if task_id else None
        if inv is None:
            return JSONResponse(
                {"error": f"no invocation {task_id!r} is kept (it expired after "
                 "durable_retention, was forgotten, or never started)"},
                status_code=404,
            )  # fmt: skip
        return JSONResponse(record(inv.as_dict()))

    def counts(request: Request) -> Response:
        return JSONResponse(admin.count_invocations(console.celery_app))

    def metrics(request: Request) -> Response:
        lines = [
            "# HELP celery_durable_invocations Invocations per live status.",
            "# TYPE celery_durable_invocations gauge",
        ]
        for status, count in admin.count_invocations(console.celery_app).items():
            lines.append(f'celery_durable_invocations{{status="{status}"}} {count}')
        return PlainTextResponse(
            "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return [
        Route("/api/invocations", invocations),
        Route("/api/invocation", invocation),
        Route("/api/counts", counts),
        Route("/metrics", metrics),
    ]
