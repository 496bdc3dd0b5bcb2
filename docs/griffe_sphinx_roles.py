"""A griffe extension for this site: the docstrings cross-reference with Sphinx roles (:class:`~a.B`,
:meth:`run`, ...), which mkdocstrings' Markdown would print as they are. Each becomes inline code: the last
dotted part for a ``~`` target, else the whole target."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|obj|exc):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
