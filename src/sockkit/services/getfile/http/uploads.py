"""Uploads over HTTP: ``PUT`` (curl) and the listing page's form (``POST`` multipart), both driving
getfile's own ``Upload`` -- the one place upload rules live -- never a copy of it.

Rules:
- Only with ``--allow-upload``, only with the token when there is one, and never for a request a
  browser marks as coming from another site (``access.from_elsewhere``).
- The size must be known before the first byte is stored, as for ``PUT1``: a PUT needs a
  Content-Length (411 without). A form's file is its last part, so its size is the request's
  Content-Length less what comes before the file's bytes and the closing delimiter after them;
  the bytes that follow the file must then be exactly that delimiter, or nothing is stored (400).
  So a browser form (which sends one file, last, as the page's form is built) needs no buffering
  of the file and no second parser; the fields before it are read from a bounded prefix.
- What gets stored and when is ``Upload``'s business: an unnamed file, linked into place only when
  complete and fsynced, never over an existing file unless asked (``?overwrite``, the form's
  checkbox, or WebDAV's ``Overwrite: T``), refused cleanly when the disk fills. Any failure or
  disconnect leaves nothing.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import posixpath
from urllib.parse import quote

from sockkit.protocols.getfile import ErrorCode, Put
from sockkit.services.getfile.http.answers import Answer, Request, error_answer, status_for
from sockkit.services.getfile.root import Refused
from sockkit.services.getfile.transfers import Transfers
from sockkit.services.getfile.upload import Upload

#: Most bytes of a form read before its file's bytes begin (its other fields and the part heads).
MAX_FORM_PREFIX = 16 * 1024
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.HTTP)


class UploadRefused(Exception):
    """An upload refused before its body: the answer to send (the connection then closes)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def content_length(request: Request) -> int:
    if "transfer-encoding" in request.headers:
        raise UploadRefused(error_answer(request, 411, "send the upload with a Content-Length (no chunked "
                                                       "encoding): its size is checked before it is stored",
                                         close=True))
    text = request.headers.get("content-length", "").strip()
    if not text.isdigit():
        raise UploadRefused(error_answer(request, 411, "an upload needs a Content-Length", close=True))
    return int(text)


def wants_overwrite(request: Request) -> bool:
    return "overwrite" in request.query or request.headers.get("overwrite", "").strip().upper() == "T"


class PutSink:
    """The body of a PUT, going straight into an Upload."""

    def __init__(self, service, request: Request, transfers: Transfers) -> None:
        rel = request.path.lstrip("/")
        if not rel or request.path.endswith("/"):
            raise UploadRefused(error_answer(request, 405, "PUT names a file, not a folder", close=True))
        size = content_length(request)
        self.request = request
        self.upload = _begin(service, request, transfers, rel, size, wants_overwrite(request))
        self.transfers = transfers

    def feed(self, data: bytes) -> Answer | None:
        if self.upload is not None:
            self.upload.feed(memoryview(data)[:self.upload.wanted])
        return None

    def finish(self) -> Answer:
        upload, self.upload = self.upload, None
        try:
            upload.complete()
        except Refused as refused:
            return error_answer(self.request, status_for(refused.code), refused.message)
        finally:
            self.transfers.end()
        location = quote(self.request.path, safe="/")
        body = f"stored {upload.shown} ({upload.size} bytes)\n".encode()
        return Answer(201, [("Location", location), ("Content-Type", "text/plain; charset=utf-8")], [body],
                      len(body))

    def abort(self) -> None:
        upload, self.upload = self.upload, None
        if upload is not None:
            upload.abort()
            self.transfers.end()


class FormSink:
    """The body of the page's form: fields, then one file, then the closing delimiter."""

    def __init__(self, service, request: Request, transfers: Transfers) -> None:
        self.service = service
        self.request = request
        self.transfers = transfers
        self.total = content_length(request)
        kind = _HEADERS.parsebytes(f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode(
            "latin-1"))
        boundary = kind.get_param("boundary")
        if kind.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
            raise UploadRefused(error_answer(request, 415, "upload with the page's form (multipart/form-data) "
                                                           "or PUT the file", close=True))
        self.delimiter = b"--" + boundary.encode("latin-1")
        self.closing = b"\r\n" + self.delimiter + b"--\r\n"
        #: A delimiter inside what should be the file's bytes means the file was not the last part.
        self.marker = b"\r\n" + self.delimiter
        self.carry = b""  # the file's last bytes, so a marker split between two reads is still seen
        self.prefix = bytearray()  # the form before the file's bytes (bounded)
        self.tail = bytearray()  # what follows the file's bytes (must be the closing delimiter)
        self.upload: Upload | None = None

    def feed(self, data: bytes) -> Answer | None:
        """Take body bytes; an answer when the upload is refused before its file (then nothing more is read)."""
        view = memoryview(data)
        if self.upload is None:
            self.prefix += view
            try:
                rest = self._begin_file()
            except UploadRefused as refused:
                return refused.answer
            if rest is None:
                return None
            view = memoryview(rest)
        take = min(len(view), self.upload.wanted)
        if take:
            window = self.carry + bytes(view[:take])
            if self.marker in window:
                return error_answer(self.request, 400, "the file must be the form's last field; nothing was "
                                                       "stored", close=True)
            self.carry = window[-(len(self.marker) - 1):]
            self.upload.feed(view[:take])
        if len(view) > take and len(self.tail) <= len(self.closing):
            self.tail += view[take:take + len(self.closing) + 1]
        return None

    def _begin_file(self) -> bytes | None:
        """Once the file's part head is here: start its Upload; returns the bytes after that head."""
        found = _file_part(bytes(self.prefix), self.delimiter)
        if found is None:
            if len(self.prefix) > MAX_FORM_PREFIX:
                raise UploadRefused(error_answer(self.request, 400, "the form's fields before its file are too long",
                                                 close=True))
            return None
        fields, filename, start = found
        name = posixpath.basename(filename.replace("\\", "/"))
        if not name:
            raise UploadRefused(error_answer(self.request, 400, "choose a file to upload", close=True))
        size = self.total - start - len(self.closing)
        if size < 0:
            raise UploadRefused(error_answer(self.request, 400, "the form ended before its file", close=True))
        folder = self.request.path.lstrip("/")
        rel = f"{folder.rstrip('/')}/{name}" if folder.strip("/") else name
        self.upload = _begin(self.service, self.request, self.transfers, rel, size, "overwrite" in fields)
        rest = bytes(self.prefix[start:])
        self.prefix = bytearray()
        return rest

    def finish(self) -> Answer:
        upload, self.upload = self.upload, None
        if upload is None:
            return error_answer(self.request, 400, "the form held no file")
        try:
            if bytes(self.tail) != self.closing:
                upload.abort()
                raise Refused(ErrorCode.BAD_REQUEST, "the form did not end where its length said; nothing was "
                                                     "stored")
            upload.complete()
        except Refused as refused:
            return error_answer(self.request, status_for(refused.code), refused.message)
        finally:
            self.transfers.end()
        folder = quote(self.request.path if self.request.path.endswith("/") else self.request.path + "/", safe="/")
        answer = Answer(303, [("Location", f"{folder}?uploaded={quote(posixpath.basename(upload.shown), safe='')}"),
                              ("Content-Type", "text/plain; charset=utf-8")], [b"stored\n"], 7)
        return answer

    def abort(self) -> None:
        upload, self.upload = self.upload, None
        if upload is not None:
            upload.abort()
            self.transfers.end()


def _begin(service, request: Request, transfers: Transfers, rel: str, size: int, overwrite: bool) -> Upload:
    """getfile's Upload for ``rel``, holding one transfer slot; refusals become UploadRefused."""
    try:
        transfers.begin()
    except Refused as refused:
        raise UploadRefused(error_answer(request, 503, refused.message, close=True, retry=True)) from None
    try:
        return service.begin_upload(Put(rel, size, None, overwrite))
    except Refused as refused:
        transfers.end()
        message = _exists(rel, request) if refused.code is ErrorCode.EXISTS else refused.message
        raise UploadRefused(error_answer(request, status_for(refused.code), message, close=True)) from None
    except BaseException:
        transfers.end()
        raise


def _exists(rel: str, request: Request) -> str:
    """The refusal of an upload over an existing file, saying how an HTTP client asks to replace it
    (Upload's own words name ``sockkit put``'s ``--force``)."""
    how = ("tick 'replace a file of the same name'" if request.method == "POST"
           else "add ?overwrite to the URL (or send Overwrite: T)")
    return f"{rel} exists on the server; {how} to replace it"


def _file_part(data: bytes, delimiter: bytes) -> tuple[dict[str, str], str, int] | None:
    """(fields before the file, the file's name, where its bytes begin) once its head is in ``data``."""
    fields: dict[str, str] = {}
    position = data.find(delimiter)
    if position < 0:
        return None
    while True:
        position += len(delimiter)
        if data[position:position + 2] == b"--":
            raise UploadRefused(_plain(400, "the form held no file"))
        head_end = data.find(b"\r\n\r\n", position)
        if head_end < 0:
            return None
        head = _HEADERS.parsebytes(data[position:head_end].lstrip(b"\r\n") + b"\r\n\r\n")
        name = _param(head, "name")
        filename = _param(head, "filename")
        if filename is not None:
            return fields, _form_text(filename), head_end + 4
        value_end = data.find(b"\r\n" + delimiter, head_end + 4)
        if value_end < 0:
            return None
        if name is not None:
            fields[_form_text(name)] = data[head_end + 4:value_end].decode("utf-8", "replace")
        position = value_end + 2


def _param(head, name: str) -> str | None:
    value = head.get_param(name, header="content-disposition")
    if isinstance(value, tuple):  # RFC 2231 form (name*=): decoded by the standard library
        value = email.utils.collapse_rfc2231_value(value)
    return value


def _form_text(text: str) -> str:
    """A name as a browser put it in a form's head: raw UTF-8, with ", CR and LF as %22, %0D, %0A."""
    raw = text.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def _plain(status: int, message: str) -> Answer:
    return error_answer(None, status, message, close=True)
