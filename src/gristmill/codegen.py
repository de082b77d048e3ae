"""Typed Python helpers generated from a pack's schemas (``gristmill sdk``).

``gm.track("order_paid", {...})`` accepts any dict; a typo or a string where the schema wants an
integer is found only at the server, as a quarantined event. The generated module gives each
event type a method with keyword arguments typed from its JSON Schema (required properties
required, enums as ``Literal``), so mypy and editors catch it where it is written. Every
method sends through :class:`gristmill.client.Client` with the schema version pinned.

One method per event type for its newest version, and ``<event>_v<N>`` for each older one.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

from gristmill.pack.models import Pack

_SIMPLE = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "array": "list[Any]",
    "object": "dict[str, Any]",
    "null": "None",
}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENVELOPE_ARGS = (
    "event_id",
    "occurred_at",
    "user_id",
    "anonymous_id",
    "session_id",
    "context",
    "extra_properties",
)


def py_type(schema: dict[str, Any]) -> str:
    """The Python annotation for one property's JSON Schema."""
    if "const" in schema:
        return f"Literal[{schema['const']!r}]"
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    t = schema.get("type")
    if isinstance(t, list):
        parts = [_SIMPLE.get(x, "Any") for x in t]
        return " | ".join(dict.fromkeys(parts))
    if isinstance(t, str):
        if t == "array" and isinstance(schema.get("items"), dict):
            return f"list[{py_type(schema['items'])}]"
        return _SIMPLE.get(t, "Any")
    return "Any"


def _ident(event_type: str) -> str:
    """A Python name for an event type (``segment.identify`` -> ``segment_identify``)."""
    return re.sub(r"[^a-z0-9_]", "_", event_type)


def _class_name(event_type: str, version: int) -> str:
    return "".join(p.capitalize() for p in _ident(event_type).split("_")) + f"V{version}"


def _usable(name: str) -> bool:
    return bool(_IDENT.match(name)) and not keyword.iskeyword(name) and name not in ENVELOPE_ARGS


def _method(pack: Pack, event_type: str, version: int, name: str) -> list[str]:
    schema = pack.schemas[event_type][version]
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    usable = [p for p in props if _usable(p)]
    req = [p for p in usable if p in required]
    opt = [p for p in usable if p not in required]
    args = [f"        {p}: {py_type(props[p])}," for p in req]
    args += [f"        {p}: {py_type(props[p])} | None = None," for p in opt]
    title = schema.get("title") or event_type.replace("_", " ")
    lines = [
        f"    def {name}(",
        "        self,",
        "        *,",
        *args,
        "        event_id: str | None = None,",
        "        occurred_at: datetime | str | None = None,",
        "        user_id: str | None = None,",
        "        anonymous_id: str | None = None,",
        "        session_id: str | None = None,",
        "        context: dict[str, Any] | None = None,",
        "        extra_properties: dict[str, Any] | None = None,",
        "    ) -> str:",
        f'        """{title} (``{event_type}`` v{version}); returns the event id."""',
        "        props: dict[str, Any] = dict(extra_properties or {})",
    ]
    lines += [f"        props[{p!r}] = {p}" for p in req]
    for p in opt:
        lines += [f"        if {p} is not None:", f"            props[{p!r}] = {p}"]
    lines += [
        "        return self.client.track(",
        f"            {event_type!r},",
        "            props,",
        f"            schema_version={version},",
        "            event_id=event_id,",
        "            occurred_at=occurred_at,",
        "            user_id=user_id,",
        "            anonymous_id=anonymous_id,",
        "            session_id=session_id,",
        "            context=context,",
        "        )",
        "",
    ]
    return lines


def _typed_dict(pack: Pack, event_type: str, version: int) -> list[str]:
    schema = pack.schemas[event_type][version]
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = []
    for p, s in props.items():
        t = py_type(s)
        fields.append(f"        {p!r}: {t if p in required else f'NotRequired[{t}]'},")
    name = _class_name(event_type, version)
    return [
        f"{name} = TypedDict(",
        f"    {name!r},",
        "    {",
        *fields,
        "    },",
        ")",
        f'"""Properties of ``{event_type}`` version {version}."""',
        "",
    ]


def generate(pack: Pack) -> str:
    """The module's source for ``pack``."""
    cls = "".join(p.capitalize() for p in re.split(r"[_\-]", pack.name)) + "Events"
    out = [
        f'"""Typed event helpers for the {pack.name!r} pack (pack fingerprint',
        f"{pack.fingerprint[:16]}). Generated by ``gristmill sdk --pack {pack.name}``;",
        'regenerate instead of editing."""',
        "",
        "from __future__ import annotations",
        "",
        "from datetime import datetime",
        "from typing import Any, Literal, NotRequired, TypedDict",
        "",
        "from gristmill.client import Client",
        "",
        '__all__ = ["' + cls + '"]',
        "",
    ]
    for event_type, spec in sorted(pack.spec.event_types.items()):
        for version in sorted(spec.versions):
            out += _typed_dict(pack, event_type, version)
    out += [
        "",
        f"class {cls}:",
        f'    """One method per event type of {pack.name!r}, over a :class:`Client`."""',
        "",
        "    def __init__(self, client: Client) -> None:",
        "        self.client = client",
        "",
    ]
    for event_type, spec in sorted(pack.spec.event_types.items()):
        versions = sorted(spec.versions)
        out += _method(pack, event_type, versions[-1], _ident(event_type))
        for v in versions[:-1]:
            out += _method(pack, event_type, v, f"{_ident(event_type)}_v{v}")
    return "\n".join(out).rstrip() + "\n"
