"""Load a pack folder and fail early, naming the file, the path inside it and the fault.

Errors look like::

    packs/marketplace/pack.yaml:41 event_types.order_paid.table: unknown table
    'marketplace_event' (declared: ad_events, marketplace_events)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gristmill.core.errors import ConfigError
from gristmill.pack.checks import PackIssue, check_pack
from gristmill.pack.checks_analytics import check_analytics
from gristmill.pack.checks_entities import check_entity_views
from gristmill.pack.checks_exports import check_exports
from gristmill.pack.models import Pack, PackSpec, build_table_columns
from gristmill.pack.pricing import load_book
from gristmill.pack.segment_calls import with_segment_calls


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each mapping key / sequence item path of a YAML document to its 1-based line."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                out[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, str(i)))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return out


def _where(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _fmt(file: Path, lines: dict[tuple[str, ...], int], path: tuple[str, ...], msg: str) -> str:
    line = _where(lines, path)
    dotted = ".".join(path) or "(top level)"
    return f"{file}{':' + str(line) if line else ''} {dotted}: {msg}"


def load_pack(root: Path) -> Pack:
    """Load and cross-check the pack in folder ``root``; raise :class:`ConfigError` on any fault."""
    file = root / "pack.yaml"
    if not file.exists():
        raise ConfigError(f"{file}: no such file (a pack is a folder holding pack.yaml)")
    text = file.read_text(encoding="utf-8")
    try:
        raw: Any = yaml.safe_load(text)
        lines = _line_index(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the document must be a mapping")
    try:
        spec = PackSpec.model_validate(raw)
    except ValidationError as exc:
        msgs = [
            _fmt(file, lines, tuple(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()
        ]
        raise ConfigError("\n".join(msgs)) from exc
    if spec.pack != root.name:
        raise ConfigError(
            _fmt(file, lines, ("pack",), f"pack name {spec.pack!r} must equal its folder name")
        )

    schemas: dict[str, dict[int, dict[str, Any]]] = {}
    issues: list[PackIssue] = []
    for et_name, et in spec.event_types.items():
        for version in et.versions:
            sfile = root / "schemas" / et_name / f"{version}.json"
            try:
                doc = json.loads(sfile.read_text(encoding="utf-8"))
            except FileNotFoundError:
                issues.append(
                    PackIssue(
                        file,
                        ("event_types", et_name, "versions"),
                        f"version {version} declared but {sfile} does not exist",
                    )
                )
                continue
            except json.JSONDecodeError as exc:
                issues.append(PackIssue(sfile, (), f"not valid JSON: {exc}"))
                continue
            schemas.setdefault(et_name, {})[version] = doc

    spec, problems = with_segment_calls(spec, schemas)
    issues += [PackIssue(file, path, msg) for path, msg in problems]
    digest = hashlib.sha256(text.encode())
    digest.update(json.dumps(schemas, sort_keys=True).encode())
    book = None
    if spec.enrichment.pricing is not None:
        book = load_book(root, spec.enrichment.pricing)
        digest.update(book.digest.encode())
    pack = Pack(
        spec=spec,
        root=root,
        schemas=schemas,
        table_columns=build_table_columns(spec),
        fingerprint=digest.hexdigest()[:16],
        price_book=book,
    )
    issues += check_pack(pack, file)
    if not issues:
        issues += check_analytics(pack, file)
        issues += check_entity_views(pack, file)
    if not issues:
        issues += check_exports(pack, file)
    if issues:
        rendered = []
        for issue in issues:
            if issue.file == file:
                rendered.append(_fmt(file, lines, issue.path, issue.message))
            else:
                dotted = ".".join(issue.path)
                rendered.append(f"{issue.file} {dotted or '(top level)'}: {issue.message}")
        raise ConfigError("\n".join(rendered))
    return pack


def load_packs(packs_dir: Path, names: list[str]) -> dict[str, Pack]:
    out: dict[str, Pack] = {}
    for name in names:
        out[name] = load_pack(packs_dir / name)
    return out
