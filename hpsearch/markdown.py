"""Markdown for user text: reports (``hpsearch report --format md``) and optuna-dashboard notes.

Study names, configurations, baseline names and sources, failure reasons and study files are
user data. Written into Markdown as they are, they can carry raw HTML, links, or a backtick that
closes a code span early. Each helper here turns any text into Markdown that renders exactly
that text:

* :func:`md_text` for running text and table cells,
* :func:`md_code` for an inline code span,
* :func:`md_fence` for a fenced code block.

Example:
    >>> md_text("<b>x</b> | [link](http://a)")
    '&lt;b&gt;x&lt;/b&gt; \\\\| \\\\[link\\\\]\\\\(http://a\\\\)'
    >>> md_code("a`b")
    '``a`b``'
"""

from __future__ import annotations

import re

# Characters with a meaning inside a line of CommonMark / GitHub-flavoured Markdown.
_PUNCTUATION = re.compile(r"([\\`*_\[\]()|~!#])")
_NEWLINES = re.compile(r"[\r\n]+")


def md_text(text: object) -> str:
    """``text`` as literal Markdown text (one line, safe in a table cell).

    HTML special characters become entities, Markdown punctuation is backslash-escaped and line
    breaks become spaces.
    """
    s = _NEWLINES.sub(" ", str(text))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _PUNCTUATION.sub(r"\\\1", s)


def md_code(text: object, *, in_table: bool = False) -> str:
    """``text`` as an inline code span that no backtick inside it can close.

    Args:
        text: Any text; line breaks become spaces.
        in_table: Escape ``|``, which GitHub's tables split cells on even inside code spans.
    """
    s = _NEWLINES.sub(" ", str(text))
    fence = "`" * (_longest_run(s, "`") + 1)
    padded = s.startswith(" ") and s.endswith(" ") and s.strip()
    if s.startswith("`") or s.endswith("`") or padded:
        s = f" {s} "  # CommonMark strips one space on each side
    if in_table:
        s = s.replace("|", "\\|")
    return f"{fence}{s}{fence}"


def md_fence(text: str, lang: str = "") -> str:
    """``text`` as a fenced code block, with a fence longer than any backtick run inside."""
    fence = "`" * max(3, _longest_run(text, "`") + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _longest_run(text: str, char: str) -> int:
    runs = re.findall(f"{re.escape(char)}+", text)
    return max((len(r) for r in runs), default=0)
