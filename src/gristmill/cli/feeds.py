"""``gristmill feeds import FILE``: preview -> commit -> transform from the command line.

Without a running server the command opens the data directory itself and shows a progress
bar over the bytes committed; with one running (``server.json``), DuckDB admits a single
writing process, so it sends the file to the server's ``/dashboard/data-feeds`` endpoints as
the local operator and polls the status.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from gristmill.cli.common import (
    DataDirOpt,
    JsonOpt,
    ServerClient,
    console,
    err_console,
    fail,
    make_settings,
    running_server,
)
from gristmill.core.errors import Problem

app = typer.Typer(help="Import CSV feeds (preview, commit, transform).", no_args_is_help=True)


class DateOrderOpt(StrEnum):
    day_first = "day_first"
    month_first = "month_first"


def _problem_item(e: dict[str, Any]) -> str:
    if "line" in e:
        return f"line {e['line']}: {'; '.join(e['errors'])}"
    return f"{e.get('column', '')}: {e.get('message', '')}"


def _report(result: dict[str, Any], json: bool) -> None:
    if json:
        console.print_json(orjson.dumps(result).decode())
        return
    s = result.get("summary") or {}
    console.print(
        f"feed [bold]{result['feed_id']}[/]: [bold]{result['status']}[/] · rows in "
        f"{result['rows_in']} = accepted {result['record_count']} + rejected {result['rejected']}"
    )
    if result.get("summary_rows"):
        console.print(f"  summary rows not loaded: {result['summary_rows']}")
    for name, pid in (result.get("merged_products") or {}).items():
        console.print(f"  merged {name!r} into product {pid}")
    for k, v in (s.get("metrics") or {}).items():
        if not k.endswith("_cents"):
            console.print(f"  {k}: {v}")
    for issue in s.get("issues") or []:
        console.print(f"  [yellow]{issue['code']}[/]: {issue['message']}")
    if s.get("error"):
        e = s["error"]
        console.print(f"  [red]{e['code']}[/]: {e['message']} (trace {e['trace_id']})")
    for r in result.get("rejects", [])[:10]:
        console.print(f"  [red]line {r['line']}[/]: {'; '.join(r['reasons'])}")


@dataclass(frozen=True)
class Choices:
    """What the preview would ask a person: day/month order and fuzzy merges."""

    date_order: str | None = None
    merge: tuple[str, ...] = ()
    merge_all: bool = False

    def body(self) -> dict[str, Any]:
        return {
            "date_order": self.date_order,
            "confirm_merges": list(self.merge),
            "confirm_all_merges": self.merge_all,
        }


def _local(
    file: Path,
    pack: str,
    business: str,
    data_type: str,
    create: bool,
    allow_invalid: bool,
    data_dir: Path | None,
    quiet: bool = False,
    choices: Choices = Choices(),
) -> dict[str, Any]:
    from gristmill.runtime import Runtime  # heavy: only when the command runs

    settings = make_settings(data_dir)
    if pack not in settings.packs:
        settings = settings.model_copy(update={"packs": [*settings.packs, pack]})
    rt = Runtime(settings)
    try:
        svc = rt.feeds
        try:
            with file.open("rb") as fh:
                up = svc.save_upload(business, pack, data_type, file.name, fh)
        except Problem as p:
            fail(p.detail)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err_console, disable=quiet) as bar:
            task = bar.add_task("commit", total=up.size)

            def step(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            try:
                res = svc.commit(
                    up,
                    auto_create_products=create,
                    allow_invalid=allow_invalid,
                    progress=step,
                    queue=False,
                    date_order=choices.date_order,
                    confirm_merges=choices.merge,
                    confirm_all_merges=choices.merge_all,
                )
            except Problem as p:
                rows = [_problem_item(e) for e in p.errors[:10]]
                fail("\n".join([p.detail, *rows]))
            t2 = bar.add_task("transform", total=None)
            svc.transformer.run(res.feed_id)
            bar.update(t2, total=1, completed=1)
        feed = svc.store.get_feed(res.feed_id)
        assert feed is not None
        svc.discard(up)
        return {
            "feed_id": res.feed_id,
            "status": feed["status"],
            "rows_in": res.rows_in,
            "record_count": res.record_count,
            "rejected": res.rejected,
            "created_products": res.created_products,
            "merged_products": res.merged_products,
            "summary_rows": res.summary_rows,
            "summary": feed["summary"],
            "rejects": svc.store.list_rejects(res.feed_id, 100),
        }
    finally:
        rt.stop()


def _remote(
    srv: ServerClient,
    file: Path,
    pack: str,
    business: str,
    data_type: str,
    create: bool,
    allow_invalid: bool,
    choices: Choices = Choices(),
) -> dict[str, Any]:
    base = srv.url + "/dashboard/data-feeds"
    headers = srv._headers
    with err_console.status(f"uploading {file.name}"), file.open("rb") as fh:
        r = httpx.post(
            f"{base}/preview",
            params={"pack": pack},
            headers=headers,
            files={"file": (file.name, fh, "text/csv")},
            data={
                "data_type": data_type,
                "business_id": business,
                **({"date_order": choices.date_order} if choices.date_order else {}),
            },
            timeout=600,
        )
    if r.status_code != 200:
        fail(f"preview: {r.status_code} {r.json().get('detail', r.text)}")
    token = r.json()["upload_token"]
    body = {
        "upload_token": token,
        "data_type": data_type,
        "auto_create_products": create,
        "allow_invalid": allow_invalid,
        "business_id": business,
        **choices.body(),
    }
    with err_console.status("committing"):
        c = httpx.post(
            f"{base}/commit", params={"pack": pack}, headers=headers, json=body, timeout=600
        )
    if c.status_code != 202:
        errs = [
            f"line {e['line']}: {'; '.join(e['errors'])}" for e in c.json().get("errors", [])[:10]
        ]
        fail("\n".join([f"commit: {c.status_code} {c.json().get('detail', c.text)}", *errs]))
    out = c.json()
    fid = out["feed_id"]
    with err_console.status("transforming"):
        while True:
            st = httpx.get(f"{base}/{fid}/transform-status", params={"pack": pack}, headers=headers)
            status = st.json()
            if status["status"] in ("transformed", "failed"):
                break
            time.sleep(0.5)
    rej = httpx.get(f"{base}/{fid}/rejects", params={"pack": pack}, headers=headers).json()
    return {
        **out,
        "status": status["status"],
        "summary": status["summary"],
        "rejects": rej["rejects"],
    }


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The CSV file.")],
    pack: Annotated[str, typer.Option("--pack", "-p", help="Pack declaring the feed.")],
    business: Annotated[str, typer.Option("--business", "-b", help="Tenant (business_id).")],
    data_type: Annotated[str, typer.Option(help="Feed template: sales or costs.")] = "sales",
    create_products: Annotated[
        bool, typer.Option(help="Create products the file names that do not exist yet.")
    ] = True,
    allow_invalid: Annotated[
        bool, typer.Option(help="Load the valid rows and keep invalid ones as rejects.")
    ] = False,
    date_order: Annotated[
        DateOrderOpt | None,
        typer.Option(help="How 03/04/2025 reads when the file does not decide it."),
    ] = None,
    merge: Annotated[
        list[str] | None,
        typer.Option(help="Accept the proposed fuzzy match of this name (repeatable)."),
    ] = None,
    merge_all: Annotated[
        bool, typer.Option(help="Accept every proposed fuzzy match to an existing product.")
    ] = False,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Import a CSV or .xlsx file: commit it (progress bar), transform it, print the summary.
    Fuzzy product matches load into the existing product only with --merge/--merge-all;
    otherwise the name is new (created, or rejected with --no-create-products)."""
    settings = make_settings(data_dir)
    srv = running_server(settings)
    choices = Choices(date_order and date_order.value, tuple(merge or ()), merge_all)
    if srv is not None:
        result = _remote(
            srv, file, pack, business, data_type, create_products, allow_invalid, choices
        )
    else:
        result = _local(
            file,
            pack,
            business,
            data_type,
            create_products,
            allow_invalid,
            data_dir,
            json,
            choices,
        )
    _report(result, json)
    if result["status"] != "transformed":
        raise typer.Exit(1)
