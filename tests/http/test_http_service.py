"""The HTTP face of the getfile service with no sockets: bytes in, actions out, against real files."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import time

import pytest

from sockkit.services.actions import Peer, SendFile
from sockkit.services.getfile import GetfileService, ServedRoot
from sockkit.services.getfile.slots import LocalSlots
from sockkit.services.getfile.transfers import INLINE_BODY
from tests.http.wire import Client, carry_out, status_of

PEER = Peer("127.0.0.1", 40000)
BIG = INLINE_BODY * 3 + 17


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello world\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(BIG))
    (root / "sub" / "deeper" / "x.json").write_bytes(b"{}")
    (root / "empty").write_bytes(b"")
    (tmp_path / "secret.txt").write_bytes(b"TOP-SECRET-CONTENT\n")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    return root


def service_for(root, **kwargs) -> GetfileService:
    later = time.time() + 100  # every file is older than the racy window: strong tags
    kwargs.setdefault("slots", LocalSlots(64))
    kwargs.setdefault("clock", lambda: later)
    return GetfileService(ServedRoot(str(root)), **kwargs)


def client_for(root, **kwargs) -> Client:
    return Client(service_for(root, **kwargs).connect(PEER))


def test_get_a_small_file_with_its_validators_and_digest(tree):
    reply = client_for(tree).request("GET", "/hello.txt")
    assert reply.status == 200
    assert reply.body == b"hello world\n"
    assert reply.header("content-length") == "12"
    assert reply.header("content-type") == "text/plain; charset=utf-8"
    assert reply.header("accept-ranges") == "bytes"
    assert reply.header("etag").startswith('"')
    assert reply.header("last-modified").endswith(" GMT")
    assert reply.header("date").endswith(" GMT")
    expected = base64.b64encode(hashlib.sha256(b"hello world\n").digest()).decode()
    assert reply.header("repr-digest") == f"sha-256=:{expected}:"


def test_head_has_the_get_headers_and_no_body(tree):
    client = client_for(tree)
    got = client.request("GET", "/sub/big.bin")
    head = client.request("HEAD", "/sub/big.bin")
    assert head.body == b""
    assert head.header("content-length") == str(BIG)
    for name in ("etag", "last-modified", "content-type", "accept-ranges"):
        assert head.header(name) == got.header(name)


def test_a_large_file_goes_zero_copy_and_holds_a_slot_until_sent(tree):
    service = service_for(tree, slots=LocalSlots(1))
    conn = service.connect(PEER)
    request = b"GET /sub/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
    actions = conn.receive(request)
    files = [a for a in actions if type(a) is SendFile]
    assert len(files) == 1 and files[0].count == BIG
    other = Client(service.connect(PEER)).request("GET", "/sub/big.bin")
    assert other.status == 503 and other.header("retry-after")
    sent, _ = carry_out(actions)
    assert sent.endswith((tree / "sub" / "big.bin").read_bytes())
    assert Client(service.connect(PEER)).request("GET", "/sub/big.bin").status == 200  # the slot is free again


def test_keep_alive_and_pipelined_requests_are_answered_in_order(tree):
    client = client_for(tree)
    assert client.request("GET", "/hello.txt").body == b"hello world\n"
    assert client.request("GET", "/sub/deeper/x.json").body == b"{}"
    conn = service_for(tree).connect(PEER)
    out, closed = carry_out(conn.receive(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n" * 3 +
                                         b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert out.count(b"HTTP/1.1 200 OK") == 4 and out.count(b"hello world\n") == 3 and not closed


def test_a_request_one_byte_at_a_time(tree):
    client = client_for(tree)
    assert client.request("GET", "/hello.txt", {"Range": "bytes=6-"}, chunks=200).body == b"world\n"


def test_http_10_closes_after_the_answer(tree):
    client = client_for(tree)
    reply = client.raw(b"GET /hello.txt HTTP/1.0\r\n\r\n")
    assert reply.status == 200 and client.closed


def test_ranges(tree):
    data = (tree / "sub" / "big.bin").read_bytes()
    client = client_for(tree)
    one = client.request("GET", "/sub/big.bin", {"Range": "bytes=100-199"})
    assert (one.status, one.body, one.header("content-range")) == (206, data[100:200], f"bytes 100-199/{BIG}")
    tail = client.request("GET", "/sub/big.bin", {"Range": "bytes=-70000"})
    assert tail.status == 206 and tail.body == data[-70000:]
    past = client.request("GET", "/sub/big.bin", {"Range": f"bytes={BIG}-"})
    assert (past.status, past.header("content-range")) == (416, f"bytes */{BIG}")
    ignored = client.request("GET", "/sub/big.bin", {"Range": "lines=1-2"})
    assert ignored.status == 200 and ignored.body == data


def test_several_ranges_are_a_multipart_answer(tree):
    data = (tree / "sub" / "big.bin").read_bytes()
    reply = client_for(tree).request("GET", "/sub/big.bin", {"Range": "bytes=0-9,-5"})
    assert reply.status == 206
    kind = reply.header("content-type")
    assert kind.startswith("multipart/byteranges; boundary=")
    boundary = kind.split("=", 1)[1].encode()
    parts = [p for p in reply.body.split(b"--" + boundary) if p.strip(b"\r\n-")]
    assert len(parts) == 2
    assert parts[0].endswith(b"\r\n\r\n" + data[:10] + b"\r\n")
    assert f"Content-Range: bytes {BIG - 5}-{BIG - 1}/{BIG}".encode() in parts[1]
    assert parts[1].endswith(data[-5:] + b"\r\n")
    big = client_for(tree).request("GET", "/sub/big.bin", {"Range": f"bytes=0-{INLINE_BODY},{INLINE_BODY * 2}-"})
    assert big.status == 206 and data[:INLINE_BODY + 1] in big.body and big.body.count(b"Content-Range") == 2


def test_conditional_gets(tree):
    client = client_for(tree)
    first = client.request("GET", "/hello.txt")
    tag, modified = first.header("etag"), first.header("last-modified")
    assert client.request("GET", "/hello.txt", {"If-None-Match": tag}).status == 304
    not_modified = client.request("GET", "/hello.txt", {"If-Modified-Since": modified})
    assert not_modified.status == 304 and not_modified.body == b"" and not_modified.header("etag") == tag
    assert client.request("GET", "/hello.txt", {"If-None-Match": '"other"'}).status == 200
    assert client.request("GET", "/hello.txt", {"If-Match": '"other"'}).status == 412
    resumed = client.request("GET", "/hello.txt", {"Range": "bytes=6-", "If-Range": tag})
    assert (resumed.status, resumed.body) == (206, b"world\n")
    changed = client.request("GET", "/hello.txt", {"Range": "bytes=6-", "If-Range": '"an-older-version"'})
    assert (changed.status, changed.body) == (200, b"hello world\n")  # another version: the whole file


def test_folders_redirect_list_and_answer_json(tree):
    client = client_for(tree)
    moved = client.request("GET", "/sub?sort=size")
    assert (moved.status, moved.header("location")) == (301, "/sub/?sort=size")
    page = client.request("GET", "/sub/")
    assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"
    assert b'href="big.bin"' in page.body and b'href="deeper/"' in page.body and b'href="../"' in page.body
    assert "script-src 'sha256-" in page.header("content-security-policy")
    listing = client.request("GET", "/sub/", {"Accept": "application/json"})
    assert listing.header("content-type").startswith("application/json")
    entries = json.loads(listing.body)["entries"]
    assert [(e["name"], e["type"]) for e in entries] == [("deeper", "directory"), ("big.bin", "file")]
    assert json.loads(client.request("GET", "/?json").body)["path"] == "/"


def test_folder_archive(tree):
    reply = client_for(tree).request("GET", "/sub/?tar")
    assert reply.status == 200 and reply.header("content-type") == "application/x-tar"
    assert "sub.tar" in reply.header("content-disposition")
    assert int(reply.header("content-length")) == len(reply.body)
    with tarfile.open(fileobj=io.BytesIO(reply.body)) as archive:
        names = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert names == {"sub/big.bin": (tree / "sub" / "big.bin").read_bytes(), "sub/deeper/x.json": b"{}"}


def test_an_archive_holds_one_slot_and_frees_it_when_done(tree):
    service = service_for(tree, slots=LocalSlots(1))
    actions = service.connect(PEER).receive(b"GET /?tar HTTP/1.1\r\nHost: x\r\n\r\n")
    assert Client(service.connect(PEER)).request("GET", "/sub/big.bin").status == 503
    carry_out(actions)
    assert Client(service.connect(PEER)).request("GET", "/sub/big.bin").status == 200


# -- hostile input: nothing outside the root, ever ------------------------------------------------------

TRAVERSALS = ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt", "/sub/..%2f..%2fsecret.txt",
              "/..%5c..%5csecret.txt", "/%252e%252e/secret.txt", "/%c0%ae%c0%ae/secret.txt", "/escape",
              "//etc/passwd", "/%2fetc%2fpasswd", "/hello.txt%00.png", "/sub/../../secret.txt",
              "http://127.0.0.1:8000/../secret.txt"]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_attempts_get_nothing_from_outside(tree, target):
    conn = service_for(tree).connect(PEER)
    out, _ = carry_out(conn.receive(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
    assert 400 <= status_of(out) < 500
    assert b"TOP-SECRET" not in out


def test_a_hostile_name_is_text_on_the_page(tree):
    (tree / '<img src=x onerror="alert(1)">.txt').write_bytes(b"x")
    page = client_for(tree).request("GET", "/").body.decode()
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.txt" in page


@pytest.mark.parametrize("chunks", [1, 50])
def test_an_oversized_head_is_431_and_closed(tree, chunks):
    """Whether it comes in one read (h11 would take it whole) or trickles in."""
    client = client_for(tree)
    reply = client.raw(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", chunks)
    assert reply.status == 431 and client.closed


def test_a_very_long_first_line_is_answered_as_http(tree):
    conn = service_for(tree).connect(PEER)
    out, _ = carry_out(conn.receive(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status_of(out) == 414


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
])
def test_smuggling_shaped_requests_are_refused_and_closed(tree, request_bytes):
    conn = service_for(tree).connect(PEER)
    out, closed = carry_out(conn.receive(request_bytes))
    assert 400 <= status_of(out) < 600 and closed


def test_unknown_methods_are_405(tree):
    reply = client_for(tree).request("DELETE", "/hello.txt")
    assert reply.status == 405 and "GET" in reply.header("allow")
    assert (tree / "hello.txt").exists()


def test_a_partial_head_is_a_pending_request(tree):
    conn = service_for(tree).connect(PEER)
    assert conn.receive(b"GET / HTTP/1.1\r\nHost:") == []
    assert conn.pending_request()
    carry_out(conn.receive(b" x\r\n\r\n"))
    assert not conn.pending_request()


# -- the token ---------------------------------------------------------------------------------------


def test_the_token_by_basic_or_bearer(tree):
    service = service_for(tree, token="s3cret")
    client = Client(service.connect(PEER))
    refused = client.request("GET", "/hello.txt")
    assert refused.status == 401 and refused.body != b"hello world\n"
    assert 'Basic realm="sockkit"' in refused.header("www-authenticate")
    basic = "Basic " + base64.b64encode(b"me:s3cret").decode()
    assert client.request("GET", "/hello.txt", {"Authorization": basic}).body == b"hello world\n"
    assert client.request("GET", "/hello.txt", {"Authorization": "Bearer s3cret"}).status == 200
    wrong = "Basic " + base64.b64encode(b"me:guess").decode()
    assert client.request("GET", "/", {"Authorization": wrong}).status == 401
    assert client.request("GET", "/hello.txt", {"Authorization": "Bearer guess"}).status == 401


def test_getfile_and_the_chapter_still_work_on_the_same_service(tree):
    service = service_for(tree)
    out, _ = carry_out(service.connect(PEER).receive(b"GET1 0 - hello.txt\n"))
    assert out.startswith(b"OK1 12 0 ") and out.endswith(b"hello world\n")
    out, closed = carry_out(service.connect(PEER).receive(b"hello.txt\n"))
    assert out == b"hello world\n" and closed


# -- uploads: PUT and the page's form, through getfile's Upload ------------------------------------------


def form_body(boundary: str, filename: str, data: bytes, overwrite: bool = False, file_last: bool = True) -> bytes:
    """A multipart/form-data body as a browser writes the page's form."""
    parts = []
    if overwrite:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\n1\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    if not file_last:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="late"\r\n\r\nx\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


FORM = {"Content-Type": "multipart/form-data; boundary=----WebKitFormBoundaryX1", "Origin": "http://127.0.0.1:8000",
        "Sec-Fetch-Site": "same-origin"}


def test_put_stores_a_new_file_and_never_overwrites_unless_asked(tree):
    client = client_for(tree, allow_upload=True)
    stored = client.request("PUT", "/sub/new.bin", body=b"fresh bytes")
    assert stored.status == 201 and stored.header("location") == "/sub/new.bin"
    assert (tree / "sub" / "new.bin").read_bytes() == b"fresh bytes"
    again = client.request("PUT", "/hello.txt", body=b"replaced?")
    assert again.status == 409 and (tree / "hello.txt").read_bytes() == b"hello world\n"
    # HTTP's own way to ask is named, not sockkit put's --force
    assert b"hello.txt exists on the server; add ?overwrite to the URL" in again.body and b"--force" not in again.body
    assert client.closed  # refused before its body: the connection ends rather than read it
    client = client_for(tree, allow_upload=True)
    assert client.request("PUT", "/hello.txt?overwrite", body=b"replaced").status == 201
    assert (tree / "hello.txt").read_bytes() == b"replaced"
    assert client.request("GET", "/sub/new.bin").body == b"fresh bytes"  # the connection goes on


def test_put_refusals(tree):
    off = client_for(tree).request("PUT", "/x", body=b"x")
    assert off.status == 405 and b"does not accept uploads (start it with --allow-upload)" in off.body
    assert client_for(tree).request("POST", "/", FORM, b"x").status == 405
    assert client_for(tree, allow_upload=True).request("PUT", "/../escaped", body=b"x").status == 403
    assert client_for(tree, allow_upload=True).request("PUT", "/sub/", body=b"x").status == 405
    assert client_for(tree, allow_upload=True).raw(
        b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n").status == 411
    cross = client_for(tree, allow_upload=True).request("PUT", "/c", {"Origin": "http://evil.example"}, b"x")
    assert cross.status == 403
    assert not (tree.parent / "escaped").exists() and not (tree / "c").exists()
    assert sorted(p.name for p in tree.iterdir()) == ["empty", "escape", "hello.txt", "sub"]  # no temporary file


def test_a_put_cut_short_leaves_nothing(tree):
    conn = service_for(tree, allow_upload=True).connect(PEER)
    carry_out(conn.receive(b"PUT /partial HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 40))
    carry_out(conn.receive(b""))
    conn.close()
    assert not (tree / "partial").exists()
    assert sorted(p.name for p in tree.iterdir()) == ["empty", "escape", "hello.txt", "sub"]


def test_put_waits_for_100_continue(tree):
    conn = service_for(tree, allow_upload=True).connect(PEER)
    out, _ = carry_out(conn.receive(b"PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"))
    assert out.startswith(b"HTTP/1.1 100 ")
    out, _ = carry_out(conn.receive(b"abc"))
    assert status_of(out) == 201 and (tree / "c").read_bytes() == b"abc"


@pytest.mark.parametrize("chunks", [1, 7, 300])
def test_the_form_stores_its_file_and_sends_the_browser_back(tree, chunks):
    data = os.urandom(5000)
    body = form_body("----WebKitFormBoundaryX1", "report \u00e9t\u00e9.pdf", data)
    reply = client_for(tree, allow_upload=True).request("POST", "/sub/", FORM, body, chunks=chunks)
    assert reply.status == 303
    assert reply.header("location") == "/sub/?uploaded=report%20%C3%A9t%C3%A9.pdf"
    assert (tree / "sub" / "report \u00e9t\u00e9.pdf").read_bytes() == data


def test_the_form_overwrites_only_when_ticked(tree):
    client = client_for(tree, allow_upload=True)
    body = form_body("----WebKitFormBoundaryX1", "hello.txt", b"new")
    refused = client.request("POST", "/", {**FORM, "Accept": "text/html"}, body)
    assert refused.status == 409
    assert b"exists on the server; tick &#x27;replace a file of the same name&#x27;" in refused.body
    assert (tree / "hello.txt").read_bytes() == b"hello world\n"
    client = client_for(tree, allow_upload=True)
    ticked = form_body("----WebKitFormBoundaryX1", "hello.txt", b"new", overwrite=True)
    assert client.request("POST", "/", FORM, ticked).status == 303
    assert (tree / "hello.txt").read_bytes() == b"new"


def test_a_form_whose_file_is_not_last_stores_nothing(tree):
    body = form_body("----WebKitFormBoundaryX1", "late.bin", b"data", file_last=False)
    assert client_for(tree, allow_upload=True).request("POST", "/", FORM, body).status == 400
    assert not (tree / "late.bin").exists()


def test_a_form_from_another_site_is_refused(tree):
    body = form_body("----WebKitFormBoundaryX1", "csrf.txt", b"x")
    evil = {**FORM, "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert client_for(tree, allow_upload=True).request("POST", "/", evil, body).status == 403
    assert not (tree / "csrf.txt").exists()


def test_uploads_need_the_token_too(tree):
    client = client_for(tree, allow_upload=True, token="s3cret")
    assert client.request("PUT", "/t", body=b"x").status == 401
    assert client_for(tree, allow_upload=True, token="s3cret").request(
        "PUT", "/t", {"Authorization": "Bearer s3cret"}, b"x").status == 201


def test_the_upload_limit_holds_for_put_the_form_and_put1(tree):
    """--max-upload: 413 over HTTP, ERR1 too-large over getfile; nothing stored either way."""
    over = client_for(tree, allow_upload=True, max_upload=10).request("PUT", "/big", body=b"x" * 11)
    assert over.status == 413 and "at most 10 bytes" in over.body.decode()
    assert client_for(tree, allow_upload=True, max_upload=10).request("PUT", "/ok", body=b"x" * 10).status == 201
    form = form_body("----WebKitFormBoundaryX1", "big.bin", b"y" * 11)
    assert client_for(tree, allow_upload=True, max_upload=10).request("POST", "/", FORM, form).status == 413
    import xxhash

    from sockkit.protocols.getfile import Put, format_request
    digest = "xxh3-128:" + xxhash.xxh3_128(b"z" * 11).hexdigest()
    conn = service_for(tree, allow_upload=True, max_upload=10).connect(PEER)
    out, _ = carry_out(conn.receive(format_request(Put("big1", 11, digest))))
    assert out.startswith(b"ERR1 too-large ")
    assert not (tree / "big").exists() and not (tree / "big.bin").exists() and not (tree / "big1").exists()
