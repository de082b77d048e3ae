"""A typed TypeScript browser client generated from a pack's schemas
(``gristmill sdk --lang ts``).

The output is one self-contained ``.ts`` file with no imports: the static runtime
(``sdk_ts/runtime.ts``, shipped inside the package: queue, batching, retry with ``Retry-After``,
keepalive flush on page hide, session and anonymous id) followed by, for each event type of the
pack, an interface of its properties and a method on the pack's client class::

    gm.trackProjectCreated("p-1", { title: "E-commerce Platform", budget: 5000 });

Method names are ``track`` + the PascalCase of the dotted name (``project.created`` →
``trackProjectCreated``). When the event type declares ``entity.id_property``, that property is
the first positional argument, as in the seed's client. Every method pins the schema version the
pack had when the file was generated (the newest; older versions get ``…V<N>`` methods), so a
later schema change on the server does not silently reinterpret old clients' events.

Property types follow the JSON Schema: ``string``/``number``/``integer``/``boolean``/``null``,
enums and consts as literal unions, arrays, nested objects; required properties are required.
An object the schema leaves open (``additionalProperties`` absent or ``true``) gets an
``[key: string]: unknown`` index signature — extra properties compile, but a known property of
the wrong type or a missing required one does not. ``additionalProperties: false`` gives no index
signature, so an excess property in an object literal fails to compile too.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from gristmill.pack.models import Pack

_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_PRIMITIVE = {
    "string": "string",
    "integer": "number",
    "number": "number",
    "boolean": "boolean",
    "null": "null",
}
_RESERVED = frozenset(
    [
        "break",
        "case",
        "catch",
        "class",
        "const",
        "continue",
        "debugger",
        "default",
        "delete",
        "do",
        "else",
        "enum",
        "export",
        "extends",
        "false",
        "finally",
        "for",
        "function",
        "if",
        "import",
        "in",
        "instanceof",
        "new",
        "null",
        "return",
        "super",
        "switch",
        "this",
        "throw",
        "true",
        "try",
        "typeof",
        "var",
        "void",
        "while",
        "with",
        "as",
        "implements",
        "interface",
        "let",
        "package",
        "private",
        "protected",
        "public",
        "static",
        "yield",
        "await",
    ]
)


def runtime_source() -> str:
    """The static runtime shipped with the package (queue, retry, session)."""
    return (resources.files("gristmill") / "sdk_ts" / "runtime.ts").read_text(encoding="utf-8")


def pascal(name: str) -> str:
    """``project.created`` → ``ProjectCreated``; ``order_paid`` → ``OrderPaid``."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    out = "".join(p[:1].upper() + p[1:] for p in parts)
    return out if out and not out[0].isdigit() else "E" + out


def camel(name: str) -> str:
    """``project_id`` → ``projectId``; safe as a parameter name."""
    p = pascal(name)
    out = p[:1].lower() + p[1:]
    return out + "_" if out in _RESERVED else out


def method_name(event_type: str, version: int | None = None) -> str:
    return "track" + pascal(event_type) + (f"V{version}" if version is not None else "")


def _key(name: str) -> str:
    return name if _IDENT.match(name) else json.dumps(name)


def _literal(value: Any) -> str:
    if isinstance(value, bool | int | float | str) or value is None:
        return json.dumps(value)
    return "unknown"


def _comment(text: str, indent: str) -> list[str]:
    text = " ".join(str(text).split()).replace("*/", "*\\/")
    return [f"{indent}/** {text} */"] if text else []


def _union(parts: list[str]) -> str:
    uniq = list(dict.fromkeys(parts))
    if "unknown" in uniq:
        return "unknown"
    return " | ".join(uniq) if uniq else "never"


def _array_of(inner: str) -> str:
    return f"Array<{inner}>" if re.search(r"[|&\s]", inner) else f"{inner}[]"


def ts_type(schema: Any, indent: str = "") -> str:
    """The TypeScript type for one JSON Schema (a property's, or a nested one)."""
    if schema is True or not isinstance(schema, dict):
        return "unknown"
    if "const" in schema:
        return _literal(schema["const"])
    if "enum" in schema and isinstance(schema["enum"], list):
        return _union([_literal(v) for v in schema["enum"]])
    for combo in ("anyOf", "oneOf"):
        if isinstance(schema.get(combo), list):
            return _union([ts_type(s, indent) for s in schema[combo]])
    t = schema.get("type")
    if isinstance(t, list):
        return _union([ts_type({**schema, "type": x}, indent) for x in t])
    if t in _PRIMITIVE:
        return _PRIMITIVE[t]
    if t == "array":
        items = schema.get("items")
        return _array_of(ts_type(items, indent) if isinstance(items, dict) else "unknown")
    if t == "object" or (t is None and "properties" in schema):
        return _object_type(schema, indent)
    return "unknown"


def _open(schema: dict[str, Any]) -> bool:
    """Whether the schema admits properties it does not list."""
    return schema.get("additionalProperties", True) is not False


def _members(schema: dict[str, Any], indent: str, skip: frozenset[str] = frozenset()) -> list[str]:
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    lines: list[str] = []
    for name, sub in props.items():
        if name in skip:
            continue
        if isinstance(sub, dict):
            lines += _comment(sub.get("description", ""), indent)
        opt = "" if name in required else "?"
        lines.append(f"{indent}{_key(name)}{opt}: {ts_type(sub, indent)};")
    extra = schema.get("additionalProperties", True)
    if _open(schema):
        # Every listed property must fit the index signature, so a typed one is only exact
        # when nothing is listed.
        value = ts_type(extra, indent) if isinstance(extra, dict) and not props else "unknown"
        lines.append(f"{indent}[key: string]: {value};")
    return lines


def _object_type(schema: dict[str, Any], indent: str) -> str:
    inner = indent + "  "
    members = _members(schema, inner)
    if not members:
        return "Record<string, never>"
    return "{\n" + "\n".join(members) + f"\n{indent}}}"


def _id_property(pack: Pack, event_type: str, version: int) -> str | None:
    """The entity id property, when the event type declares one its schema lists."""
    entity = pack.spec.event_types[event_type].entity
    if entity is None:
        return None
    props = pack.schemas[event_type][version].get("properties") or {}
    return entity.id_property if entity.id_property in props else None


def _names(event_type: str, version: int, latest: bool) -> tuple[str, str, str]:
    """(props interface, full properties type, method) names."""
    base = pascal(event_type) + ("" if latest else f"V{version}")
    return f"{base}Props", f"{base}Properties", method_name(event_type, None if latest else version)


def _interfaces(pack: Pack, event_type: str, version: int, latest: bool) -> list[str]:
    schema = pack.schemas[event_type][version]
    props_name, full_name, _ = _names(event_type, version, latest)
    id_prop = _id_property(pack, event_type, version)
    title = schema.get("title") or event_type
    desc = pack.spec.event_types[event_type].description
    doc = f"{title} (`{event_type}` v{version}): the properties passed to the method"
    doc += f", without `{id_prop}` (its first argument)." if id_prop else "."
    out = _comment(doc + (f" {desc}" if desc else ""), "")
    members = _members(schema, "  ", frozenset({id_prop}) if id_prop else frozenset())
    out += [f"export interface {props_name} {{", *members, "}", ""]
    out += _comment(f"Every property of `{event_type}` v{version}, as sent.", "")
    if id_prop:
        id_type = ts_type(schema["properties"][id_prop])
        required = id_prop in set(schema.get("required") or [])
        id_member = f"{_key(id_prop)}{'' if required else '?'}: {id_type}"
        out.append(f"export type {full_name} = {props_name} & {{ {id_member} }};")
    else:
        out.append(f"export type {full_name} = {props_name};")
    return [*out, ""]


def _all_optional(schema: dict[str, Any], skip: str | None) -> bool:
    return not [r for r in schema.get("required") or [] if r != skip]


def _method(pack: Pack, event_type: str, version: int, latest: bool) -> list[str]:
    schema = pack.schemas[event_type][version]
    props_name, _, name = _names(event_type, version, latest)
    id_prop = _id_property(pack, event_type, version)
    default = " = {}" if _all_optional(schema, id_prop) else ""
    title = schema.get("title") or event_type
    out = _comment(
        f"{title}: queues a `{event_type}` event (schema version {version}); returns its event id.",
        "  ",
    )
    if id_prop:
        id_type = ts_type(schema["properties"][id_prop], "  ")
        arg = camel(id_prop)
        required = id_prop in set(schema.get("required") or [])
        id_arg = f"{arg}: {id_type}{'' if required else ' | undefined'}"
        out += [
            f"  {name}({id_arg}, props: {props_name}{default}, options?: TrackOptions): string {{",
            f"    const properties: Record<string, unknown> = {{ ...props, {_key(id_prop)}: "
            f"{arg} }};",
            f"    return this.enqueue({json.dumps(event_type)}, {version}, properties, options);",
            "  }",
            "",
        ]
        if not required:
            out.insert(
                -3, f"    if ({arg} === undefined) delete properties[{json.dumps(id_prop)}];"
            )
        return out
    return [
        *out,
        f"  {name}(props: {props_name}{default}, options?: TrackOptions): string {{",
        f"    return this.enqueue({json.dumps(event_type)}, {version}, {{ ...props }}, options);",
        "  }",
        "",
    ]


def client_class(pack: Pack) -> str:
    return pascal(pack.name) + "Client"


def generate(pack: Pack) -> str:
    """The ``.ts`` source of the typed client for ``pack``."""
    cls = client_class(pack)
    events = sorted(pack.spec.event_types.items())
    latest = {et: max(spec.versions) for et, spec in events}
    out = [
        f"// Typed Gristmill client for the {pack.name!r} pack (pack fingerprint "
        f"{pack.fingerprint[:16]}).",
        f"// Generated by `gristmill sdk --lang ts --pack {pack.name}`; regenerate instead of "
        "editing.",
        "// No third-party code: bundle with `esbuild <file>.ts --bundle --format=iife "
        "--global-name=Gristmill`.",
        '/// <reference lib="dom" />',
        "",
        runtime_source().rstrip(),
        "",
        "// -- generated from the pack's schemas ---------------------------------------------"
        "------------",
        "",
        f"export const PACK = {json.dumps(pack.name)};",
        f"export const PACK_FINGERPRINT = {json.dumps(pack.fingerprint)};",
        "",
        "/** The schema version each event type's method pins (the newest at generation). */",
        "export const SCHEMA_VERSIONS = {",
        *[f"  {json.dumps(et)}: {v}," for et, v in latest.items()],
        "} as const;",
        "",
        "export type EventType = keyof typeof SCHEMA_VERSIONS;",
        "",
    ]
    for et, spec in events:
        for v in sorted(spec.versions, reverse=True):
            out += _interfaces(pack, et, v, v == latest[et])
    out += [
        "/** The properties of each event type's newest version, for `track`. */",
        "export interface EventProperties {",
        *[f"  {json.dumps(et)}: {_names(et, latest[et], True)[1]};" for et in latest],
        "}",
        "",
        f"/** One typed method per event type of the {pack.name!r} pack. */",
        f"export class {cls} extends GristmillClient {{",
        "  constructor(options: ClientOptions) {",
        "    super(options, PACK);",
        "  }",
        "",
        "  /** Any event type by name, with its newest version's properties. */",
        "  track<T extends EventType>(",
        "    eventType: T,",
        "    properties: EventProperties[T],",
        "    options?: TrackOptions,",
        "  ): string {",
        "    return this.enqueue(eventType, SCHEMA_VERSIONS[eventType], { ...properties }, "
        "options);",
        "  }",
        "",
    ]
    for et, spec in events:
        for v in sorted(spec.versions, reverse=True):
            out += _method(pack, et, v, v == latest[et])
    out[-1:] = [
        "}",
        "",
        f"/** A {cls} for `options`. */",
        f"export function createClient(options: ClientOptions): {cls} {{",
        f"  return new {cls}(options);",
        "}",
    ]
    return "\n".join(out).rstrip() + "\n"
