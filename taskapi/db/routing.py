"""FastAPI glue: routes whose request runs in one `UnitOfWork`, and the dependency that
hands it to endpoints."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from taskapi.db.unit_of_work import UnitOfWork

SESSION_KEY = "taskapi.session"


class UnitOfWorkRoute(APIRoute):
    """Routes whose whole request (validation, the endpoint, the response) runs in one
    `UnitOfWork`, which commits before the response is sent: a 2xx is only ever sent for a
    committed write."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run_in_unit_of_work(request: Request) -> Response:
            async with UnitOfWork(request.app.services.db) as work:
                request.scope[SESSION_KEY] = work
                return await handler(request)

        return run_in_unit_of_work


async def get_session(request: Request) -> UnitOfWork:
    """The request's unit of work (see `UnitOfWorkRoute`)."""
    work: UnitOfWork = request.scope[SESSION_KEY]
    return work


Session = Annotated[UnitOfWork, Depends(get_session)]
