"""FastAPI glue: routes whose request runs in one `UnitOfWork`, and the dependency that
hands it to endpoints."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from taskapi.db.failures import UserRowMissingError
from taskapi.db.unit_of_work import UnitOfWork

SESSION_KEY = "taskapi.session"


class UnitOfWorkRoute(APIRoute):
    """Routes whose whole request (validation, the endpoint, the response) runs in one
    `UnitOfWork`, which commits before the response is sent: a 2xx is only ever sent for a
    committed write. A request that found its user's row gone (`UserRowMissingError`:
    deleted by `DELETE /api/v1/me` in another worker) runs once more, provisioned afresh."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run_in_unit_of_work(request: Request) -> Response:
            services = request.app.services
            try:
                async with UnitOfWork(services.db) as work:
                    request.scope[SESSION_KEY] = work
                    return await handler(request)
            except UserRowMissingError as gone:
                if gone.owner_id is None:
                    raise
                # Once more, in a fresh unit of work, with the user provisioned afresh (the
                # body is cached on the request, so it is read again as it was).
                services.authenticator.provisioner.forget(gone.owner_id)
            async with UnitOfWork(services.db) as work:
                request.scope[SESSION_KEY] = work
                return await handler(request)

        return run_in_unit_of_work


async def get_session(request: Request) -> UnitOfWork:
    """The request's unit of work (see `UnitOfWorkRoute`)."""
    work: UnitOfWork = request.scope[SESSION_KEY]
    return work


Session = Annotated[UnitOfWork, Depends(get_session)]
