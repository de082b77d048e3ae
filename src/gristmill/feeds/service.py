"""Preview, commit and auto-create products: the request side of a feed.

``preview`` keeps the upload under a token and parses its first rows; ``commit`` re-parses
the whole file as a stream (one staging batch in memory at a time), resolves products,
writes accepted rows to the staging table and rejected rows (line, reasons, original fields)
to the metadata store, and queues the transform (:mod:`gristmill.feeds.transform`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from sqlglot import exp

from gristmill.config import FeedSettings
from gristmill.core.errors import Problem, not_found, payload_too_large
from gristmill.feeds import excel
from gristmill.feeds.csvread import CsvError, NotText
from gristmill.feeds.fastlane import stage_fast
from gristmill.feeds.preview import preview_rows
from gristmill.feeds.products import Matcher
from gristmill.feeds.rows import MissingColumns, Scan, jsonable, match_header, scan
from gristmill.feeds.sink import FeedTables
from gristmill.feeds.staging import Stager
from gristmill.feeds.store import FeedStore, Upload, utcnow
from gristmill.feeds.template import CellType, Feed
from gristmill.feeds.transform import Transformer, iso_z
from gristmill.pack.models import ColumnType, Pack
from gristmill.warehouse.base import Warehouse

log = logging.getLogger(__name__)

MAX_ROW_ERRORS = 100


def gone(detail: str) -> Problem:
    return Problem(410, "upload-gone", "Upload gone", detail)


def money(cents: int | None) -> float | None:
    """Cents as a JSON number; exact in text for any amount below 2^53 cents."""
    return None if cents is None else float(Decimal(cents) / 100)


@dataclass(frozen=True, slots=True)
class CommitResult:
    feed_id: int
    record_count: int
    rows_in: int
    rejected: int
    status: str
    created_products: dict[str, int]
    summary_rows: int = 0
    merged_products: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": True,
            "feed_id": self.feed_id,
            "record_count": self.record_count,
            "rows_in": self.rows_in,
            "rejected": self.rejected,
            "status": self.status,
            "created_products": self.created_products,
            "merged_products": self.merged_products,
            "summary_rows": self.summary_rows,
        }


class FeedService:
    def __init__(
        self,
        settings: FeedSettings,
        data_dir: Path,
        packs: Mapping[str, Pack],
        feeds: Mapping[str, Mapping[str, Feed]],
        store: FeedStore,
        warehouse: Warehouse,
    ) -> None:
        self.settings = settings
        self.dir = settings.upload_dir or data_dir / "feeds"
        self.packs = packs
        self.feeds = feeds
        self.store = store
        self.wh = warehouse
        ddl = [s for fs in feeds.values() for f in fs.values() for s in self.tables(f).ddl()]
        if ddl:
            warehouse.provision([], apply=True, extra=ddl)
        self.transformer = Transformer(store, warehouse, self.feed, self.tables)

    # -- lookups ------------------------------------------------------------------------
    def staging_text_columns(self) -> list[tuple[exp.Table, list[str]]]:
        """Every feed's staging table and its text columns (erasure scans them)."""
        out = []
        for by_type in self.feeds.values():
            for feed in by_type.values():
                t = self.tables(feed)
                cols = [c for c, ct in t.stage_columns().items() if ct is ColumnType.STRING]
                if cols:
                    out.append((t.staging, cols))
        return out

    def tables(self, feed: Feed) -> FeedTables:
        return FeedTables(feed, self.wh.dialect)

    def feed(self, pack: str, data_type: str) -> Feed:
        feed = self.feeds.get(pack, {}).get(data_type)
        if feed is None:
            known = ", ".join(self.feeds.get(pack, {})) or "none"
            raise Problem(
                400,
                "unknown-data-type",
                "Unknown data type",
                f"data_type must be one of: {known} (pack {pack!r})",
            )
        return feed

    def _format(self, feed: Feed, values: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in values.items():
            spec = feed.spec.columns.get(k)
            out[k] = money(v) if spec is not None and spec.type is CellType.MONEY else jsonable(v)
        return out

    # -- preview ------------------------------------------------------------------------
    def save_upload(
        self, business_id: str, pack: str, data_type: str, filename: str, src: BinaryIO
    ) -> Upload:
        """Copy the upload to disk under a new token, refusing it past the size limit."""
        self.feed(pack, data_type)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.purge_expired()  # uploads nobody committed in time leave no files behind
        token = str(uuid.uuid4())
        path = self.dir / f"{token}.upload"
        limit = self.settings.max_upload_bytes
        size = 0
        with path.open("wb") as out:
            while chunk := src.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    out.close()
                    path.unlink(missing_ok=True)
                    raise payload_too_large(limit, "upload")
                out.write(chunk)
        path = self._as_csv(self.feed(pack, data_type), path)
        up = Upload(
            token,
            business_id,
            pack,
            data_type,
            str(path),
            filename,
            size,
            utcnow() + timedelta(seconds=self.settings.token_ttl_s),
        )
        self.store.put_upload(up)
        return up

    @staticmethod
    def _as_csv(feed: Feed, path: Path) -> Path:
        """The upload as the CSV every later step reads: a workbook is converted (its sheet
        with the feed's header), a ZIP that is no workbook refused; ``<token>.csv``."""
        dst = path.with_suffix(".csv")
        try:
            if excel.is_workbook(path):

                def is_header(fields: Any) -> bool:
                    try:
                        match_header(feed, list(fields))
                    except MissingColumns:
                        return False
                    return True

                excel.to_csv(path, dst, is_header)
                path.unlink()
                return dst
            excel.refuse_archive(path)
        except CsvError as e:
            path.unlink(missing_ok=True)
            dst.unlink(missing_ok=True)
            slug, title = (
                ("not-text", "Not a text file")
                if isinstance(e, NotText)
                else ("excel-unreadable", "Unreadable workbook")
            )
            raise Problem(422, slug, title, str(e)) from e
        path.rename(dst)
        return dst

    def preview(self, up: Upload, date_order: str | None = None) -> dict[str, Any]:
        feed = self.feed(up.pack, up.data_type)
        matcher = self._matcher(feed, up.business_id)
        with self._scan(feed, Path(up.path), date_order) as s:
            body = preview_rows(
                feed, s, self.settings.preview_rows, matcher, lambda v: self._format(feed, v)
            )
            headers, dialect = s.header.names, s.dialect
        return {
            "success": True,
            "upload_token": up.token,
            "expires_at": iso_z(up.expires_at),
            "data_type": up.data_type,
            "headers": headers,
            "columns": {c: headers[i] for c, i in s.header.index.items()},
            "ignored_headers": s.header.ignored,
            "file": {
                "name": up.filename,
                "bytes": up.size,
                "format": "xlsx" if up.filename.lower().endswith((".xlsx", ".xlsm")) else "csv",
                "encoding": dialect.encoding,
                "delimiter": dialect.delimiter,
                "sep_line": dialect.sep_line,
            },
            **body,
        }

    def _scan(self, feed: Feed, path: Path, date_order: str | None = None) -> Scan:
        try:
            return scan(feed, path, date_order)
        except MissingColumns as e:
            raise Problem(
                422,
                "missing-columns",
                "Missing required columns",
                str(e),
                errors=[{"column": c, "message": "required column not found"} for c in e.missing],
                extra={"missing": e.missing, "headers": e.headers},
            ) from e
        except NotText as e:
            raise Problem(422, "not-text", "Not a text file", str(e)) from e
        except CsvError as e:
            raise Problem(422, "unreadable-csv", "Unreadable CSV", str(e)) from e

    def _matcher(self, feed: Feed, business_id: str) -> Matcher | None:
        if feed.spec.lookup is None:
            return None
        return Matcher(self.store.products(business_id), feed.spec.lookup.threshold)

    # -- commit -------------------------------------------------------------------------
    def upload_for(self, token: str, business_id: str | None) -> Upload:
        """The caller's upload; 410 when missing or expired, 404 when another tenant's."""
        up = self.store.get_upload(token)
        if up is None:
            raise gone("the upload token is unknown or was removed; upload the file again")
        if business_id is not None and up.business_id != business_id:
            raise not_found("no such upload here")
        if up.expires_at <= datetime.now(UTC):
            self.discard(up)
            raise gone("the upload token expired; upload the file again")
        if not Path(up.path).exists():
            raise gone("the uploaded file is no longer there; upload the file again")
        return up

    def discard(self, up: Upload) -> None:
        Path(up.path).unlink(missing_ok=True)
        self.store.drop_upload(up.token)

    def commit(
        self,
        up: Upload,
        *,
        auto_create_products: bool,
        allow_invalid: bool = False,
        progress: Callable[[int, int], None] | None = None,
        queue: bool = True,
        date_order: str | None = None,
        confirm_merges: Collection[str] = (),
        confirm_all_merges: bool = False,
    ) -> CommitResult:
        """Stage the whole file and queue its transform. With rejected rows (other than
        summary rows) and not ``allow_invalid`` the feed fails with ``validation_failed``
        (422 with the rows). A file whose day/month order is undecided needs ``date_order``
        (422 ``date-order-needed``); fuzzy product matches load into the matched product only
        for the names in ``confirm_merges`` (or all, ``confirm_all_merges``)."""
        if up.feed_id is not None:
            # The same upload committed again: the feed it already made, nothing staged twice.
            done = self.store.get_feed(up.feed_id)
            if done is not None and done["status"] != "failed":
                return CommitResult(
                    done["id"],
                    done["record_count"],
                    done["rows_in"],
                    done["rejected_count"],
                    done["status"],
                    {},
                )
        feed = self.feed(up.pack, up.data_type)
        feed_id = self.store.create_feed(up.business_id, up.pack, up.data_type, up.filename)
        st = Stager(
            feed,
            self.tables(feed),
            self.store,
            self.wh,
            up,
            feed_id,
            auto_create=auto_create_products,
            batch_rows=self.settings.stage_batch_rows,
            confirm_merges=confirm_merges,
            confirm_all_merges=confirm_all_merges,
        )
        try:
            with self._scan(feed, Path(up.path), date_order) as s:
                if s.dates.needs_choice:
                    ev = s.dates.evidence
                    seen = ", ".join(repr(t) for _, t in (ev.ambiguous if ev else [])[:3])
                    raise Problem(
                        422,
                        "date-order-needed",
                        "Day or month first?",
                        f"dates such as {seen} read both ways (or the file mixes both orders);"
                        " commit with date_order day_first or month_first",
                        extra={"dates": s.dates.as_dict()},
                    )
                fast = self.settings.fast_lane and stage_fast(
                    st, Path(up.path), s.dialect, s.header, s.header_end, progress, s.dates.order
                )
                if not fast:
                    for row in s.rows:
                        st.add(row)
                        if progress is not None and st.accepted % 50_000 == 0:
                            progress(s.bytes_read(), up.size)
                st.finish()
                if progress is not None:
                    progress(up.size, up.size)
        except Problem as p:
            st.abandon()
            self._fail(
                feed_id, p.slug.replace("-", "_"), p.detail, st.accepted + st.rejected, st.rejected
            )
            raise
        except Exception as e:
            st.abandon()
            self._fail(feed_id, "commit_failed", str(e), st.accepted + st.rejected, st.rejected)
            raise
        accepted, rejected, errors, created = st.accepted, st.rejected, st.errors, st.created
        rows_in = accepted + rejected
        invalid = rejected - st.summary_rows
        if accepted == 0 or (invalid and not allow_invalid):
            why = "no valid rows" if accepted == 0 else f"{invalid} of {rows_in} rows are invalid"
            self._fail(feed_id, "validation_failed", why, rows_in, rejected, accepted)
            raise Problem(
                422,
                "invalid-rows",
                "Invalid rows",
                f"{why}; fix them, or commit with allow_invalid to load the valid rows",
                errors=sorted(errors, key=lambda e: e["line"]),
                extra={
                    "feed_id": feed_id,
                    "rows_in": rows_in,
                    "rejected": rejected,
                    "summary_rows": st.summary_rows,
                },
            )
        queued_at = utcnow()
        self.store.update_feed(
            feed_id,
            status="queued",
            record_count=accepted,
            rows_in=rows_in,
            rejected_count=rejected,
            summary=self._queued_summary(queued_at, st.summary_rows, st.merged),
        )
        self.store.set_upload_feed(up.token, feed_id)
        if queue:
            self.transformer.enqueue(feed_id)
        return CommitResult(
            feed_id, accepted, rows_in, rejected, "queued", created, st.summary_rows, st.merged
        )

    @staticmethod
    def _queued_summary(at: datetime, summary_rows: int, merged: dict[str, int]) -> dict[str, Any]:
        """The queued summary, with the commit's notes (kept by the transform as issues)."""
        issues = []
        if summary_rows:
            issues.append(
                {
                    "type": "info",
                    "code": "summary_row",
                    "message": f"{summary_rows} summary (total) rows were not loaded.",
                    "count": summary_rows,
                }
            )
        if merged:
            issues.append(
                {
                    "type": "info",
                    "code": "merged_products",
                    "message": f"{len(merged)} names merged into existing products as confirmed.",
                    "count": len(merged),
                    "merged": merged,
                }
            )
        out: dict[str, Any] = {"stage": "queued", "queued_at": iso_z(at)}
        if issues:
            out["commit_issues"] = issues
        return out

    def _fail(
        self, feed_id: int, code: str, message: str, rows_in: int, rejected: int, accepted: int = 0
    ) -> None:
        self.store.update_feed(
            feed_id,
            status="failed",
            rows_in=rows_in,
            rejected_count=rejected,
            record_count=accepted,
            summary={
                "stage": "failed",
                "error": {"code": code, "message": message, "trace_id": uuid.uuid4().hex},
            },
        )

    # -- products -----------------------------------------------------------------------
    def create_products(
        self, business_id: str, items: Iterable[Mapping[str, Any]]
    ) -> dict[str, int]:
        clean = []
        for item in items:
            name = " ".join(str(item.get("name") or "").split())
            if not name:
                raise Problem(
                    422, "invalid-product", "Invalid product", "every product needs a name"
                )
            entry = {"name": name[:200], "category": item.get("category"), "unit": item.get("unit")}
            for price in ("selling_price", "cost_price"):
                v = item.get(price)
                entry[f"{price}_cents"] = None if v is None else int(Decimal(str(v)) * 100)
            clean.append(entry)
        return self.store.create_products(business_id, clean)

    def purge_expired(self) -> int:
        gone_ = self.store.expired_uploads(utcnow())
        for up in gone_:
            self.discard(up)
        return len(gone_)

    def close(self) -> None:
        self.transformer.stop()
