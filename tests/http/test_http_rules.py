"""The pure rules of the HTTP face: ranges and conditionals against RFC 9110's own examples,
request targets, tokens, origins, media types, the listing page's escaping, the archive's format."""

from __future__ import annotations

import base64
import io
import os
import tarfile

import pytest

from sockkit.protocols.getfile import Entry
from sockkit.services.getfile import ServedRoot
from sockkit.services.getfile.http import looks_like_http, starts_like_http
from sockkit.services.getfile.http.access import from_elsewhere, presented_token
from sockkit.services.getfile.http.archive import Plan
from sockkit.services.getfile.http.conditional import (
    Validators,
    entity_tags,
    parse_http_date,
    precondition,
    range_applies,
    validators_for,
)
from sockkit.services.getfile.http.media import content_type
from sockkit.services.getfile.http.page import render_json, render_page
from sockkit.services.getfile.http.ranges import UNSATISFIABLE, Span, ranges_for
from sockkit.services.getfile.http.target import BadTarget, parse_target

# -- ranges: RFC 9110 section 14.1.2's examples, on a representation of 10,000 bytes -----------------


@pytest.mark.parametrize(("header", "spans"), [
    ("bytes=0-499", [Span(0, 499)]),  # the first 500 bytes
    ("bytes=500-999", [Span(500, 999)]),  # the second 500 bytes
    ("bytes=-500", [Span(9500, 9999)]),  # the final 500 bytes
    ("bytes=9500-", [Span(9500, 9999)]),  # the final 500 bytes, the other way
    ("bytes=0-0,-1", [Span(0, 0), Span(9999, 9999)]),  # the first and last bytes only
    ("bytes=0-999,4500-5499,-1000", [Span(0, 999), Span(4500, 5499), Span(9000, 9999)]),
    ("bytes=500-600,601-999", [Span(500, 999)]),  # "other valid (but not canonical)" forms of 500-999
    ("bytes=500-700,601-999", [Span(500, 999)]),
])
def test_rfc9110_range_examples(header, spans):
    assert ranges_for(header, 10_000) == spans


def test_range_past_the_end_is_unsatisfiable_and_a_long_last_pos_is_clipped():
    assert ranges_for("bytes=10000-", 10_000) is UNSATISFIABLE
    assert ranges_for("bytes=20000-30000", 10_000) is UNSATISFIABLE
    assert ranges_for("bytes=-0", 10_000) is UNSATISFIABLE
    assert ranges_for("bytes=9000-99999", 10_000) == [Span(9000, 9999)]
    assert ranges_for("bytes=-20000", 10_000) == [Span(0, 9999)]  # a suffix longer than the file: all of it
    assert ranges_for("bytes=0-", 0) is UNSATISFIABLE


NINE_RANGES = "bytes=1-1,3-3,5-5,7-7,9-9,11-11,13-13,15-15,17-17"


@pytest.mark.parametrize("header", ["items=0-5", "bytes=5-1", "bytes=abc", "bytes=1-2-3", "bytes", "bytes=--5",
                                    "bytes=" + ",".join(["0-0"] * 101), NINE_RANGES])
def test_ranges_this_server_does_not_take_are_ignored(header):
    """Another unit, bad syntax, a first-pos after its last-pos, absurd lists: answered whole (None)."""
    assert ranges_for(header, 10_000) is None


def test_many_overlapping_ranges_coalesce_into_one():
    assert ranges_for("bytes=" + ",".join(["0-"] * 50), 10_000) == [Span(0, 9999)]


# -- conditionals (RFC 9110 section 13) -------------------------------------------------------------

STRONG = Validators('"abc"', 1_000_000)
WEAK = Validators('W/"abc"', 1_000_000)
LATER = "Mon, 12 Jan 1970 13:46:41 GMT"  # 1,000,001 s
EARLIER = "Mon, 12 Jan 1970 13:46:39 GMT"  # 999,999 s
SAME = "Mon, 12 Jan 1970 13:46:40 GMT"


def test_http_dates_in_the_three_formats_rfc9110_names():
    """RFC 9110 5.6.7: IMF-fixdate, obsolete RFC 850 and asctime all mean 784111777."""
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777
    assert parse_http_date("yesterday") is None
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 +0200") is None  # HTTP dates are GMT


def test_entity_tag_lists():
    assert entity_tags('"xyzzy"') == ['"xyzzy"']
    assert entity_tags('"xyzzy", "r2d2xxxx", "c3piozzzz"') == ['"xyzzy"', '"r2d2xxxx"', '"c3piozzzz"']
    assert entity_tags('W/"xyzzy", W/"r2d2xxxx"') == ['W/"xyzzy"', 'W/"r2d2xxxx"']
    assert entity_tags("xyzzy") is None


def test_if_none_match_uses_weak_comparison_and_gives_304_for_get_and_head():
    """RFC 9110 8.8.3.2's table: W/"1" and "1" match weakly, never strongly."""
    assert precondition("GET", {"if-none-match": 'W/"abc"'}, STRONG) == 304
    assert precondition("HEAD", {"if-none-match": '"abc"'}, WEAK) == 304
    assert precondition("GET", {"if-none-match": '"other", "abc"'}, STRONG) == 304
    assert precondition("GET", {"if-none-match": '"other"'}, STRONG) is None
    assert precondition("GET", {"if-none-match": "*"}, STRONG) == 304


def test_if_none_match_outranks_if_modified_since():
    """RFC 9110 13.1.3: a recipient MUST ignore If-Modified-Since when If-None-Match is present."""
    assert precondition("GET", {"if-none-match": '"other"', "if-modified-since": LATER}, STRONG) is None


def test_if_modified_since():
    assert precondition("GET", {"if-modified-since": SAME}, STRONG) == 304
    assert precondition("GET", {"if-modified-since": LATER}, STRONG) == 304
    assert precondition("GET", {"if-modified-since": EARLIER}, STRONG) is None
    assert precondition("GET", {"if-modified-since": "not a date"}, STRONG) is None  # ignored


def test_if_match_needs_a_strong_match_and_comes_first():
    assert precondition("GET", {"if-match": '"abc"'}, STRONG) is None
    assert precondition("GET", {"if-match": '"abc"'}, WEAK) == 412
    assert precondition("GET", {"if-match": 'W/"abc"'}, STRONG) == 412
    assert precondition("GET", {"if-match": '"nope"', "if-none-match": '"abc"'}, STRONG) == 412
    assert precondition("PUT", {"if-match": "*"}, None) == 412  # nothing there to match


def test_if_unmodified_since():
    assert precondition("GET", {"if-unmodified-since": EARLIER}, STRONG) == 412
    assert precondition("GET", {"if-unmodified-since": SAME}, STRONG) is None


def test_if_range_with_an_etag_or_a_date():
    assert range_applies({}, STRONG)
    assert range_applies({"if-range": '"abc"'}, STRONG)
    assert not range_applies({"if-range": '"old"'}, STRONG)
    assert not range_applies({"if-range": 'W/"abc"'}, WEAK)  # weak tags never match If-Range
    assert range_applies({"if-range": SAME}, STRONG)
    assert not range_applies({"if-range": LATER}, STRONG)  # a date must match exactly


def test_a_file_changed_within_the_racy_window_has_a_weak_tag(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    info = os.stat(path)
    assert validators_for(info, info.st_ctime + 0.5).weak
    assert not validators_for(info, info.st_ctime + 5).weak
    assert validators_for(info, info.st_mtime - 100).modified == int(info.st_mtime - 100)  # never after Date


# -- request targets, hostile ones included ------------------------------------------------------------


def test_targets():
    assert parse_target(b"/a%20b/c.txt?sort=size&order=desc") == ("/a b/c.txt", {"sort": "size", "order": "desc"})
    assert parse_target(b"http://example.com/x/y?json") == ("/x/y", {"json": ""})
    assert parse_target(b"/%252e%252e/x") == ("/%2e%2e/x", {})  # decoded once, never twice
    assert parse_target(b"/a%2fb") == ("/a/b", {})


@pytest.mark.parametrize(("target", "status"), [(b"/%00", 400), (b"/a%00.txt", 400), (b"/%c0%ae%c0%ae/", 400),
                                                (b"/%ff", 400), (b"*", 400), (b"example.com:80", 400),
                                                (b"ftp://x/y", 400), (b"/" + b"a" * 5000, 414)])
def test_hostile_targets_are_refused(target, status):
    with pytest.raises(BadTarget) as caught:
        parse_target(target)
    assert caught.value.status == status


def test_sniffing_the_first_line():
    assert looks_like_http(b"GET / HTTP/1.1\r\n")
    assert looks_like_http(b"HEAD /x?y HTTP/1.0\n")
    assert not looks_like_http(b"GET1 0 - notes.txt\n")
    assert not looks_like_http(b"LIST1 .\n")
    assert not looks_like_http(b"testdir/textfile\n")  # the chapter's bare path
    assert not looks_like_http(b"GET / HTTP/2\r\n")
    assert starts_like_http(b"GET /" + b"a" * 5000)
    assert not starts_like_http(b"a" * 5000)


# -- access ------------------------------------------------------------------------------------------


def test_tokens_from_bearer_and_basic():
    assert presented_token("Bearer s3cret") == "s3cret"
    assert presented_token("Basic " + base64.b64encode(b"anyone:s3cret").decode()) == "s3cret"
    assert presented_token("Basic " + base64.b64encode(b"nopassword").decode()) is None
    assert presented_token("Basic !!!") is None
    assert presented_token("Digest x") is None
    assert presented_token(None) is None


def test_cross_site_requests_are_told_apart():
    assert from_elsewhere({"host": "127.0.0.1:8000"}) is None  # curl
    assert from_elsewhere({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000",
                           "sec-fetch-site": "same-origin"}) is None
    assert from_elsewhere({"host": "127.0.0.1:8000", "origin": "http://evil.example"})
    assert from_elsewhere({"host": "127.0.0.1:8000", "origin": "null"})
    assert from_elsewhere({"host": "127.0.0.1:8000", "sec-fetch-site": "cross-site"})
    assert from_elsewhere({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:9999"})


# -- media types and the page ------------------------------------------------------------------------


def test_content_types_from_names():
    assert content_type("notes.txt") == "text/plain; charset=utf-8"
    assert content_type("a.PDF") == "application/pdf"
    assert content_type("backup.tar.gz") == "application/gzip"  # never Content-Encoding
    assert content_type("no-extension") == "application/octet-stream"


HOSTILE = '<img src=x onerror="alert(1)">.txt'


def test_hostile_names_are_text_in_the_page_and_in_links():
    page = render_page("/", "root", [Entry("f", 3, 0, HOSTILE), Entry("d", 0, 0, "<script>x</script>")]).decode()
    assert "<img" not in page and "<script>x" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.txt" in page
    assert 'href="%3Cimg%20src%3Dx%20onerror%3D%22alert%281%29%22%3E.txt"' in page


def test_breadcrumbs_and_sorting_links():
    page = render_page("/a/b c/", "root", [Entry("f", 1, 0, "x")], sort="size", descending=True).decode()
    assert '<a href="/">root</a> / <a href="/a/">a</a> / b c</h1>' in page
    assert 'href="?sort=size&amp;order=asc">Size \u25be' in page


def test_json_listing():
    body = render_json("/", [Entry("f", 5, 1_000_000_000, "a"), Entry("d", 0, 0, "dir")])
    assert b'"name": "a", "type": "file", "size": 5, "mtime_ns": 1000000000, "modified": "1970-01-01T00:00:01Z"' \
        in body


# -- the archive ----------------------------------------------------------------------------------


def test_an_archive_plan_is_a_tar_file_of_exactly_its_length(tmp_path):
    """Long and non-ASCII names (pax headers), empty files, files of 512 +/- 1 bytes."""
    names = {"a.txt": b"hello\n", "empty": b"", "sub/\u00e9t\u00e9.bin": os.urandom(511),
             "sub/" + "n" * 150: os.urandom(513), "sub/deep/block": os.urandom(512)}
    for name, data in names.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    root = ServedRoot(str(tmp_path))
    from sockkit.services.getfile.listing import tree_entries
    with root.open_directory("") as walk:
        entries = tree_entries(walk, ".")
    plan = Plan("top", "", entries)
    finished = []
    stream = bytearray()
    for part in plan.parts(root, lambda: finished.append(True)):
        if isinstance(part, bytes):
            stream += part
        else:
            stream += os.pread(part.file.fileno(), part.count, part.offset)
            part.file.close()
    assert finished == [True]
    assert len(stream) == plan.length
    with tarfile.open(fileobj=io.BytesIO(bytes(stream))) as archive:
        got = {member.name: archive.extractfile(member).read() for member in archive.getmembers()}
    assert got == {f"top/{name}": data for name, data in names.items()}
