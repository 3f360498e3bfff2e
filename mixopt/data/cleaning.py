"""Cleaning text: what every domain shares (line ends, control characters, blank lines) and the
cleaners some domains need (HTML, e-mail, Project Gutenberg, Metamath proofs, untranslated
English, chat turns). Pure functions of text."""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import html
import re

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# These patterns match only where something changes: a substitution per ordinary space is slow.
_SPACE_RUNS = re.compile(r"[\t\f\v\xa0][ \t\f\v\xa0]*| [ \t\f\v\xa0]+")
_SPACES_AROUND_NEWLINES = re.compile(r" \n ?|\n ")
_BLANK_LINES = re.compile(r"\n\n\n+")


def clean_text(text: str) -> str:
    """Text every domain shares: \\n line ends, no control characters but tab and form feed, no
    leading or trailing blank lines, a final newline (or "" for a document with nothing in it)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_CHARACTERS.sub("", text)
    text = text.strip("\n")
    return text + "\n" if text.strip() else ""


def collapse_whitespace(text: str) -> str:
    """Runs of spaces and tabs to one space, no spaces at line ends, at most one blank line."""
    text = _SPACE_RUNS.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _SPACES_AROUND_NEWLINES.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text)


def decode_utf8(data: bytes) -> str | None:
    """UTF-8 text (a leading BOM dropped), or None when the bytes are not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


_HTML_DROPPED = re.compile(
    r"<(script|style|head)\b.*?</\1\s*>"
    r"|<!--.*?-->"
    r'|<ul class="docnav[^"]*">.*?</ul>'
    r'|<div id="banner">.*?</div>'
    r'|<p id="title">.*?</p>',
    re.S | re.I,
)
_HTML_LINE_BREAKS = re.compile(r"<br\s*/?>|</(?:p|div|h[1-6]|li|pre|tr|dt|dd|table|ul|ol|blockquote|title)\s*>", re.I)
_HTML_TAGS = re.compile(r"<[^>]*>")


def html_to_text(markup: str) -> str:
    """Readable text of an HTML page: no scripts, styles or navigation; block ends become newlines."""
    markup = _HTML_DROPPED.sub(" ", markup)
    markup = _HTML_LINE_BREAKS.sub("\n", markup)
    text = html.unescape(_HTML_TAGS.sub("", markup))
    return collapse_whitespace(text).strip()


# Frequent English words that are not words of French, German, Spanish, Italian or Portuguese.
ENGLISH_FUNCTION_WORDS = frozenset(
    "the and of to is that with for this which are be from by it can you your have they their has not".split()
)


def drop_english_lines(text: str, share: float = 0.2) -> str:
    """Drop lines (of 4 words or more) in which English function words make up `share` of the
    words: the untranslated passages and code comments of a translated book."""
    kept = []
    for line in text.split("\n"):
        words = line.lower().split()
        if len(words) >= 4 and sum(word in ENGLISH_FUNCTION_WORDS for word in words) >= share * len(words):
            continue
        kept.append(line)
    return _BLANK_LINES.sub("\n\n", "\n".join(kept))


_PROOF_OR_COMMENT = re.compile(r"\$\(.*?\$\)|\$=.*?\$\.", re.S)


def elide_metamath_proofs(database: str) -> str:
    """Replace every proof (`$= ... $.`) by `$= ? $.`; comments (`$( ... $)`) and statements stay."""
    return _PROOF_OR_COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith("$(") else "$= ? $.", database)


_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(
    r"^\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG.*$|^End of (?:the )?Project Gutenberg", re.M | re.I
)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header (up to its START line) and footer (from its END line)."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def _decode_header(value: str | None) -> str:
    if not value:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (UnicodeError, LookupError, email.errors.HeaderParseError):
        return str(value)


def _decode_part(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset()
    if charset:
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            pass
    return decode_utf8(payload) or payload.decode("latin-1")


_EMAIL_HEADERS_KEPT = re.compile(
    rb"^(?:subject|mime-version|content-type|content-transfer-encoding):.*(?:\n[ \t].*)*", re.M | re.I
)


def email_to_text(raw: bytes) -> str:
    """The Subject line and the decoded text/* parts of a raw email (HTML parts reduced to text).

    Only the headers that matter here are handed to the email parser (routing headers make up
    most of a 2002 message and most of the parsing time)."""
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    kept = b"\n".join(match.group(0) for match in _EMAIL_HEADERS_KEPT.finditer(head))
    message = email.message_from_bytes(kept + b"\n\n" + body)
    bodies = []
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        body = _decode_part(part)
        if part.get_content_subtype() == "html":
            body = html_to_text(body)
        bodies.append(body)
    subject = _decode_header(message.get("Subject")).replace("\n", " ")
    return collapse_whitespace(f"Subject: {subject}\n\n" + "\n\n".join(bodies)).strip()


def chitchat_to_text(conversation: dict) -> str:
    """A chitchat conversation as lines `A: ...` / `B: ...`, one line per turn."""
    speakers: dict[str, str] = {}
    lines = []
    for turn in conversation.get("messages", []):
        messages = [" ".join(str(m.get("text", "")).split()) for m in turn]
        messages = [m for m in messages if m]
        if not messages:
            continue
        sender = turn[0].get("sender", "")
        speaker = speakers.setdefault(sender, chr(ord("A") + min(len(speakers), 25)))
        lines.append(f"{speaker}: {' '.join(messages)}")
    return "\n".join(lines)
