"""POST /api/v1/export: the caller's project's events as CSV, JSON, NDJSON or Parquet, streamed.

The body is validated and the first chunk produced before the response starts, so bad filters
are a 422 and a failing store a 503, never a truncated 200. After that, chunks are produced one
at a time as the client reads them: memory is bounded by one record batch per export, and at
most :data:`MAX_CONCURRENT_EXPORTS` run at once (each holds one of the store's read channels
for its duration; the others wait their turn). With the DuckDB store process and query workers
on (the default), the export is encoded in a process of its own and the server relays its bytes
(:mod:`avila.export.process`); otherwise in a server thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, post
from litestar.response import Stream

from avila.api.component import AppContext
from avila.export.process import ExportProcess, ExportProcesses, export_in_process
from avila.export.query import ExportRequest, parse_request
from avila.export.stream import ExportStream, filename, open_export
from avila.storage.base import Store

MAX_CONCURRENT_EXPORTS = 2
_SLOTS = "export_slots"
_PROCESSES = "export_processes"


async def _chunks(
    first: bytes | None, stream: ExportStream | ExportProcess, slots: asyncio.Semaphore
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    finished = False
    try:
        chunk = first
        while chunk is not None:
            if chunk:
                yield chunk
            chunk = await loop.run_in_executor(None, next, stream, None)
        finished = True
    finally:
        if finished:
            slots.release()
        else:
            # The client went away: finish reading the query off the loop, then free the slot.
            future = loop.run_in_executor(None, stream.close)
            future.add_done_callback(lambda _: slots.release())


@post(
    "/api/v1/export",
    opt={"scope": "read"},
    summary="Export events",
    description=(
        'Body `{"format": "csv"|"json"|"ndjson"|"parquet", "filters": {"user_ids", '
        '"event_types", "start_time", "end_time", "properties"}}` (all filters optional; '
        "time range half-open, on the event time). Streams the file with a "
        "Content-Disposition attachment header; columns are listed in docs/export.md."
    ),
    tags=["export"],
    status_code=200,
    response_description="The file, streamed.",
)
async def export_events(request: Request[Any, Any, Any], store: Store, ctx: AppContext) -> Stream:
    export = parse_request(await request.body())
    project_id = request.state.principal.project_id
    slots: asyncio.Semaphore = ctx.state[_SLOTS]
    await slots.acquire()
    loop = asyncio.get_running_loop()
    try:
        stream = await loop.run_in_executor(None, _open, store, project_id, export, ctx)
    except BaseException:
        slots.release()
        raise
    try:
        first = await loop.run_in_executor(None, next, stream, None)
    except BaseException:
        loop.run_in_executor(None, stream.close).add_done_callback(lambda _: slots.release())
        raise
    name = filename(project_id, stream.format)
    return Stream(
        _chunks(first, stream, slots),
        media_type=stream.format.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _open(
    store: Store, project_id: str, export: ExportRequest, ctx: AppContext
) -> ExportStream | ExportProcess:
    processes: ExportProcesses | None = ctx.state[_PROCESSES]
    if processes is not None:
        return processes.open(project_id, export)
    return open_export(store, project_id, export)


def setup(ctx: AppContext) -> None:
    ctx.state[_SLOTS] = asyncio.Semaphore(MAX_CONCURRENT_EXPORTS)
    in_process = export_in_process(ctx.store, ctx.settings.query_workers)
    ctx.state[_PROCESSES] = ExportProcesses(ctx.store) if in_process else None


async def shutdown(ctx: AppContext) -> None:
    processes: ExportProcesses | None = ctx.state[_PROCESSES]
    if processes is not None:
        await asyncio.to_thread(processes.close)


ROUTES = [export_events]
