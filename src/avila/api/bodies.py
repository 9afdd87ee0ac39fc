"""Request bodies sent compressed: ``Content-Encoding: gzip`` on the ingest routes.

Browsers' and SDKs' batches compress about 10x (PostHog's and Segment's libraries gzip them), so
the event routes and the Segment routes accept gzip. The route's size limit applies to the body
as sent *and* to the body inflated, so a small "zip bomb" is refused after reading at most its
limit plus one byte of output, never inflated whole. Other encodings (``br``, ``deflate``,
``zstd``) are 415 ``unsupported_content_encoding``, not a JSON error on bytes we did not decode.
"""

from __future__ import annotations

import zlib

from avila.errors import MalformedJSON, PayloadTooLarge, UnsupportedMediaType

#: Content-Encoding values that mean "not encoded".
_IDENTITY = ("", "identity")


def is_encoded(content_encoding: str) -> bool:
    return content_encoding.strip().lower() not in _IDENTITY


def decoded(body: bytes, content_encoding: str, limit: int) -> bytes:
    """``body`` as sent with ``content_encoding``, decoded; at most ``limit`` bytes inflated
    (:class:`PayloadTooLarge` past it, :class:`MalformedJSON` for a body that is not gzip)."""
    encoding = content_encoding.strip().lower()
    if encoding in _IDENTITY:
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding!r} is not supported; send gzip or no encoding",
            code="unsupported_content_encoding",
            details=[{"path": "", "header": "Content-Encoding", "value": content_encoding}],
        )
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise MalformedJSON("request body is not valid gzip") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        message = f"request body inflates to more than {limit:,} bytes; the limit is {limit:,}"
        raise PayloadTooLarge(
            message, details=[{"path": "", "message": message, "limit_bytes": limit}]
        )
    if not inflater.eof:
        raise MalformedJSON("request body is not valid gzip: it ends before the gzip stream")
    return inflated
