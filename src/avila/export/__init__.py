"""Exports (CSV, JSON, NDJSON, Parquet) streamed from the store, and file imports."""

from avila.export.query import EXPORT_COLUMNS, ExportFilters, ExportRequest, parse_request
from avila.export.stream import ExportStream, open_export
from avila.export.writers import FORMATS, ExportFormat

__all__ = [
    "EXPORT_COLUMNS",
    "FORMATS",
    "ExportFilters",
    "ExportFormat",
    "ExportRequest",
    "ExportStream",
    "open_export",
    "parse_request",
]
