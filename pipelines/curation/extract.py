"""WARC/WET records to documents, as FineWeb makes them: HTML through trafilatura, with a time limit per page.

`warc_document(item, settings)` takes a record from `readers.read_unit` and returns (record, rejection,
quarantine error): a document to filter, a drop with (stage, reason, detail), or an unreadable payload.
"""

from __future__ import annotations

import re


def _decode_html(content: bytes, headers: dict) -> str | None:
    """UTF-8, else the charset the HTTP header names; None when neither decodes."""
    charsets = ["utf-8"]
    match = re.search(r"charset=([\w-]+)", headers.get("http_content_type", ""), re.I)
    if match:
        charsets.append(match.group(1))
    for charset in charsets:
        try:
            return content.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
    return None


HTML_TYPES = ("text/html", "application/xhtml+xml")


def extract_main_text(page: str, timeout_s: float) -> str:
    """trafilatura's main text of an HTML page (FineWeb's settings), or TimeoutError after `timeout_s` seconds.

    A few pages make trafilatura run for minutes; like datatrove's 1 s sandbox, such a page is dropped rather than
    stalling its chunk. The alarm needs the main thread (where Ray runs tasks); elsewhere there is no limit."""
    import signal
    import threading

    import trafilatura

    def extract() -> str:
        return trafilatura.extract(page, favor_precision=True, include_comments=False, deduplicate=True) or ""

    if not timeout_s or threading.current_thread() is not threading.main_thread():
        return extract()

    def expired(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return extract()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def warc_document(item: tuple, settings: dict) -> tuple[dict | None, tuple[str, str, str] | None, str | None]:
    """(record, rejection, quarantine error) for a WARC item; HTML goes through trafilatura as FineWeb does."""
    _, index, headers, content = item
    mime = headers.get("WARC-Identified-Payload-Type") or headers.get("http_content_type", "").split(";")[0].strip()
    if not mime and headers.get("rec_type") == "resource":
        mime = headers.get("Content-Type", "").split(";")[0].strip()
    is_text = headers["rec_type"] == "conversion"
    record = {
        "id": headers.get("WARC-Record-ID"),
        "url": headers.get("WARC-Target-URI"),
        "date": headers.get("WARC-Date"),
        "content_type": mime,
    }
    if not is_text and mime and mime.lower() not in HTML_TYPES:
        return record, ("read", "unsupported_content_type", mime), None
    page = _decode_html(content, headers)
    if page is None:
        return None, None, f"record {index}: cannot decode the payload as UTF-8 or its declared charset"
    if is_text:
        text = page
    else:
        try:
            text = extract_main_text(page, settings.get("extract_timeout_s", 10))
        except TimeoutError:
            return record, ("extract", "extraction_timeout", f"over {settings.get('extract_timeout_s', 10)} s"), None
    if not text.strip():
        return record, ("extract", "no_main_text", ""), None
    return {**record, "text": text}, None, None
