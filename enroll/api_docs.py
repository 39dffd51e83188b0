"""The API description at `/docs`, as one self-contained HTML page rendered on the server from the OpenAPI schema.

FastAPI's own `/docs` (Swagger UI) and `/redoc` load their JavaScript and CSS from a CDN, so they show a blank page
on a machine without internet, which is where a front desk or door controller often is. This page needs nothing
but the service: every endpoint, its fields and its responses, plus a link to the raw `/openapi.json` for tools.
It is a reference, not an interactive console ("try it out" is the page at `/`, or curl).
"""
from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font-family:ui-monospace,monospace;font-size:13px}h2{margin-top:2rem;border-bottom:1px solid #ddd}
.m{display:inline-block;min-width:4.5rem;font-weight:bold}table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}"""


def render(schema: dict[str, Any]) -> str:
    """The whole page for an OpenAPI 3 schema (only the parts FastAPI generates for this service)."""
    info = schema.get("info", {})
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(info.get('title', 'API'))} API"
             f"</title><style>{_STYLE}</style>",
             f"<h1>{escape(info.get('title', ''))} {escape(str(info.get('version', '')))} — HTTP API</h1>",
             f"<p>{escape(info.get('description', ''))}</p>",
             "<p>Machine-readable: <a href=/openapi.json>/openapi.json</a>. The page at <a href=/>/</a> uses "
             "these endpoints. Errors are JSON <code>{\"error\": \"one line\"}</code>; with a token set, send "
             "<code>Authorization: Bearer &lt;token&gt;</code>.</p>"]
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(f"<h2><span class=m>{escape(method.upper())}</span><code>{escape(path)}</code></h2>")
            parts.append(f"<p>{escape(op.get('summary', ''))}</p>")
            parts.extend(_parameters(op))
            parts.extend(_body(op))
            codes = ", ".join(escape(code) for code in op.get("responses", {}))
            if codes:
                parts.append(f"<p>Documented responses: {codes}.</p>")
    return "\n".join(parts) + "\n</html>\n"


def _parameters(op: dict[str, Any]) -> list[str]:
    params = op.get("parameters") or []
    if not params:
        return []
    rows = "".join(f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('in', ''))}</td>"
                   f"<td>{escape(p.get('schema', {}).get('type', ''))}</td></tr>" for p in params)
    return [f"<table><tr><th>parameter</th><th>in</th><th>type</th></tr>{rows}</table>"]


def _body(op: dict[str, Any]) -> list[str]:
    content = (op.get("requestBody") or {}).get("content") or {}
    out = []
    for media, spec in content.items():
        schema = spec.get("schema") or {}
        required = set(schema.get("required") or [])
        rows = ""
        for name, prop in (schema.get("properties") or {}).items():
            kind = prop.get("type", "")
            if kind == "array":
                kind = f"{prop.get('items', {}).get('format', 'string')} (repeatable)"
            elif prop.get("format"):
                kind = prop["format"]
            rows += (f"<tr><td><code>{escape(name)}</code>{' (required)' if name in required else ''}</td>"
                     f"<td>{escape(kind)}</td><td>{escape(prop.get('description', ''))}</td></tr>")
        out.append(f"<p>Body: <code>{escape(media)}</code></p><table><tr><th>field</th><th>type</th>"
                   f"<th>meaning</th></tr>{rows}</table>")
    return out
