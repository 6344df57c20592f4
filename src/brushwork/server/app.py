"""The FastAPI app: ``/sdapi/v1`` (A1111), ``/brushwork/v1`` (ours), the web UI, ``/docs``.

    app = create_app(ServerConfig(service=ServiceConfig(settings, roots=(root,))))
    uvicorn.run(app, host="127.0.0.1", port=7860)

The app owns nothing: its `JobService` (queue, workers, job record, options) starts with the
app's lifespan and stops with it. With credentials, every route needs HTTP basic auth.

Scaling out: one worker per device (``devices``), all fed from the one queue. Past one
machine, run several ``brushwork serve`` processes behind any HTTP load balancer; they share
only the library folder (read-mostly) and the data folder's SQLite files (WAL mode); each
process has its own queue and marks only its own rows (``owner`` = host:port) lost on restart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from brushwork.core.errors import BrushworkError, ConfigError, ModelFileError
from brushwork.jobs import JobCancelledError, JobService, QueueFullError, ServiceConfig
from brushwork.library.errors import AmbiguousModelError, ModelNotFoundError
from brushwork.server.auth import BasicAuthMiddleware, Credential
from brushwork.server.extras import router as extras_router
from brushwork.server.library_routes import router as library_router
from brushwork.server.project_routes import router as project_router
from brushwork.server.sdapi import router as sdapi_router
from brushwork.server.training_routes import router as training_router
from brushwork.server.xyz_routes import router as xyz_router

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """What `create_app` needs: the job service's config, credentials, whether to serve the UI."""

    service: ServiceConfig = field(default_factory=ServiceConfig)
    credentials: tuple[Credential, ...] = ()
    ui: bool = True
    flags: dict[str, Any] = field(default_factory=dict)  # shown by /sdapi/v1/cmd-flags


def _error(status: int, error: BaseException, **headers: str) -> JSONResponse:
    body = {
        "error": type(error).__name__,
        "detail": str(error),
        "body": "",
        "errors": str(error),
    }
    return JSONResponse(body, status_code=status, headers=headers or None)


def _status_of(error: BrushworkError) -> int:
    if isinstance(error, ModelNotFoundError):
        return 404
    if isinstance(error, ConfigError | AmbiguousModelError | ModelFileError):
        return 422
    if isinstance(error, JobCancelledError):
        return 409
    return 400


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(QueueFullError)
    async def queue_full(_request: Request, error: QueueFullError) -> JSONResponse:
        return _error(503, error, **{"Retry-After": str(error.retry_after_s)})

    @app.exception_handler(BrushworkError)
    async def brushwork_error(_request: Request, error: BrushworkError) -> JSONResponse:
        return _error(_status_of(error), error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": list(item.get("loc", ())),
                "msg": str(item.get("msg")),
                "type": item.get("type"),
            }
            for item in error.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)


def create_app(config: ServerConfig) -> FastAPI:
    """The app; its job service starts on startup and stops on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = JobService(config.service)
        service.start()
        app.state.service = service
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="brushwork",
        description="A1111-compatible API (/sdapi/v1) and brushwork's own (/brushwork/v1).",
        lifespan=lifespan,
    )
    app.state.flags = dict(config.flags)
    _install_handlers(app)
    app.include_router(sdapi_router)
    app.include_router(extras_router)
    app.include_router(library_router)
    app.include_router(training_router)
    app.include_router(xyz_router)
    app.include_router(project_router)
    if config.ui:
        static = resources.files("brushwork.ui") / "static"
        app.mount("/ui", StaticFiles(directory=str(static), html=True), name="ui")

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/ui/")

    if config.credentials:
        app.add_middleware(BasicAuthMiddleware, credentials=config.credentials)
    return app
