"""The worker's prompt: issue text made safe to hand an agent, and the
template filled in. Issue text is data: it reaches the worker on stdin,
never through argv or a shell, and cannot close the tags that delimit it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

from adws.config import Config


# Variation selectors and tag characters can carry a whole hidden message
# behind one visible emoji ("ASCII smuggling"); fillers render as nothing.
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u2064\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
                        "\U000e0000-\U000e007f\U000e0100-\U000e01ef]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_HTML_COMMENT = re.compile(r"<!--.*?(-->|\Z)", re.S)
_HIDDEN_OPEN = re.compile(
    r"<(\w+)\b[^>]*(\bhidden\b|display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0)[^>]*>", re.I)
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# `[//]: # (text)` is Markdown's comment idiom: a link definition nobody
# references, so GitHub shows none of it.
_MD_COMMENT = re.compile(r"^ {0,3}\[[^\]\n]*\]:[ \t]*(?:#|<>)(?:[ \t].*)?$", re.M)
ISSUE_TEXT_LIMIT = 20_000


def _strip_hidden_html(text: str) -> str:
    """Drop elements marked hidden with all they contain. The close tag is
    found by counting nested tags of the same name; an unclosed one hides the
    rest of the text, as it would in a browser."""
    out, pos = [], 0
    while True:
        m = _HIDDEN_OPEN.search(text, pos)
        if not m:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:m.start()])
        name = m.group(1).lower()
        if name in _VOID_TAGS or m.group(0).endswith("/>"):
            pos = m.end()
            continue
        depth, pos = 1, len(text)
        for tag in re.finditer(rf"<(/?)\s*{re.escape(name)}\b[^>]*>", text[m.end():], re.I):
            depth += -1 if tag.group(1) else 1
            if depth == 0:
                pos = m.end() + tag.end()
                break


def clean_issue_text(text: str, limit: int = ISSUE_TEXT_LIMIT) -> str:
    """Issue text as data for the prompt: no HTML comments, hidden HTML,
    invisible or control characters; size-capped with a note."""
    text = (text or "").replace("\r\n", "\n")
    # Comments first: an invisible character inside `--\u200b>` must not end
    # a comment early and let what GitHub hides reach the agent.
    text = _HTML_COMMENT.sub("", text)
    text = _strip_hidden_html(text)
    text = _MD_COMMENT.sub("", text)
    text = _INVISIBLE.sub("", text)
    text = _CONTROL.sub("", text)
    # The template delimits issue text with <issue-...> tags; the text must
    # not be able to close them.
    text = re.sub(r"<\s*/?\s*issue-", lambda m: m.group(0).replace("<", "&lt;"), text, flags=re.I)
    if len(text.encode("utf-8")) > limit:
        text = text.encode("utf-8")[:limit].decode("utf-8", "ignore")
        text += f"\n\n[... issue text cut at {limit // 1000} KB by the coordinator ...]"
    return text


def render_template(template: str, values: Dict[str, str]) -> str:
    """Fill {name} placeholders in one pass. Not str.format: a `{` in an
    issue title must neither crash nor reach Python's formatting machinery,
    and a value is never expanded again."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def build_prompt(cfg: Config, n: int, issue: dict, branch: str, tree: Path) -> str:
    """The worker's prompt from the template; raises OSError if unreadable."""
    template = cfg.template_path.read_text(encoding="utf-8")
    return render_template(template, {
        "issue_number": str(n), "title": clean_issue_text(issue.get("title", ""), 1000),
        "body": clean_issue_text(issue.get("body") or ""), "branch": branch, "repo": cfg.repo,
        "base_branch": cfg.base_branch, "worktree": str(tree)})
