"""CSV exports a pack declares: rows of a window, or reconciled metric reports (docs/exports.md).

The public surface is :class:`ExportService` (built by the runtime as ``rt.exports``) and
the records it returns; everything else is internal.
"""

from gristmill.exports.service import Download, ExportService, RowsStream
from gristmill.exports.store import ExportJob

__all__ = ["Download", "ExportJob", "ExportService", "RowsStream"]
