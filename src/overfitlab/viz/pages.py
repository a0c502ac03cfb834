"""The HTML pages' templates: the study report and the diagnosis, built from ``templates/``.

Both pages extend ``base.html.j2`` (one stylesheet: phone-width safe, tables scroll in their
own box) and take their tables, cells and figures from ``macros.html.j2``. Autoescaping is on,
so every string from a user (a model reference, a class name, a path, an error) is escaped
where it lands; an unknown name in a template is an error, never a blank.
"""

from __future__ import annotations

import functools

import jinja2


@functools.cache
def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("overfitlab.viz", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
