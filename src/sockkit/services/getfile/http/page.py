"""The listing page of a folder (HTML) and its JSON form, pure.

Rules:
- Every name and path from the disk is escaped before it meets HTML (``html.escape``) and
  percent-encoded before it meets a URL: a file called ``<img src=x onerror=alert(1)>.txt`` is
  shown as exactly that text. The page carries a Content-Security-Policy (``POLICY``) that allows
  no script but the one below, as a second wall.
- One request, one small page: no external assets, styles inline, readable and sortable with
  JavaScript off (sorting is links; the server sorts). The script only adds drag and drop and
  several files at once to the upload form, which works without it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote

from sockkit.protocols.getfile import Entry

SORT_KEYS = ("name", "size", "mtime")

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60em;padding:1em;color:#222;background:#fff}
h1{font-size:1.25em;font-weight:600;word-break:break-all}h1 a{color:#036;text-decoration:none}
table{border-collapse:collapse;width:100%}th,td{padding:.3em .6em;text-align:left;border-bottom:1px solid #eee}
th a{color:#222}td.n{word-break:break-all}td.s,th.s{text-align:right;white-space:nowrap}
td.m{white-space:nowrap;color:#555}a{color:#036}tr.d a.f{font-weight:600}a.g{text-decoration:none;margin-left:.4em}
.tools{color:#555}.msg{padding:.5em;background:#eef6ee;border:1px solid #cdc}.err{background:#fbeeee;border-color:#dcc}
form{margin:1.5em 0;padding:1em;border:2px dashed #bbb;border-radius:6px}form.over{border-color:#369;background:#f3f7fb}
@media (prefers-color-scheme:dark){body{background:#111;color:#ddd}a,h1 a,th a{color:#8bd}td.m,.tools{color:#aaa}
th,td{border-color:#333}.msg{background:#1d2b1d;border-color:#363}.err{background:#2b1d1d;border-color:#633}}
""".strip()

#: Uploads several files (PUT each, the same rules as the form) and takes dropped files.
_SCRIPT = """
(function(){var f=document.getElementById('upload');if(!f||!window.fetch)return;
var i=f.querySelector('input[type=file]'),o=f.querySelector('input[name=overwrite]'),
 s=document.getElementById('status');
i.multiple=true;
function send(files){var k=0,failed=[];function next(){if(k>=files.length){
 if(failed.length){s.textContent='Not uploaded: '+failed.join('; ');s.className='msg err';}else{location.reload();}
 return;}
 var file=files[k++];s.textContent='Uploading '+file.name+' ('+k+' of '+files.length+')';s.className='msg';
 fetch(encodeURIComponent(file.name)+(o.checked?'?overwrite':''),{method:'PUT',body:file,credentials:'same-origin'})
 .then(function(r){if(r.ok)return;return r.text().then(function(t){failed.push(file.name+': '+t.trim());});})
 .catch(function(e){failed.push(file.name+': '+e);}).then(next);}next();}
f.addEventListener('submit',function(e){if(i.files.length){e.preventDefault();send(Array.prototype.slice.call(i.files));}});
['dragenter','dragover'].forEach(function(n){document.addEventListener(n,function(e){e.preventDefault();
 f.className='over';});});
document.addEventListener('dragleave',function(){f.className='';});
document.addEventListener('drop',function(e){e.preventDefault();f.className='';
 if(e.dataTransfer&&e.dataTransfer.files.length)send(Array.prototype.slice.call(e.dataTransfer.files));});
})();
""".strip()


def _source_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: The page's Content-Security-Policy: nothing from anywhere, except its own style and script.
POLICY = (f"default-src 'none'; style-src {_source_hash(_STYLE)}; script-src {_source_hash(_SCRIPT)}; "
          "img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    return f"{size} B"


def sorted_entries(entries: Iterable[Entry], key: str, descending: bool) -> list[Entry]:
    """Folders first, then files, each group sorted by ``key`` (name breaks ties)."""
    if key == "size":
        order = sorted(entries, key=lambda e: (e.size, e.path))
    elif key == "mtime":
        order = sorted(entries, key=lambda e: (e.mtime_ns, e.path))
    else:
        order = sorted(entries, key=lambda e: (e.path.casefold(), e.path))
    if descending:
        order.reverse()
    return [e for e in order if e.kind == "d"] + [e for e in order if e.kind != "d"]


def _stamp(mtime_ns: int) -> tuple[str, str]:
    """(shown, ISO 8601) for a modification time, in UTC so every visitor reads the same."""
    moment = datetime.fromtimestamp(mtime_ns // 1_000_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M"), moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _href(name: str) -> str:
    return quote(name, safe="")


def breadcrumbs(url_path: str, root_name: str) -> str:
    """Links to the root and every folder above, the current one as plain text."""
    parts = [part for part in url_path.split("/") if part]
    crumbs = [f'<a href="/">{html.escape(root_name)}</a>' if parts else html.escape(root_name)]
    for depth, part in enumerate(parts):
        if depth == len(parts) - 1:
            crumbs.append(html.escape(part))
        else:
            link = "/" + "/".join(_href(p) for p in parts[:depth + 1]) + "/"
            crumbs.append(f'<a href="{link}">{html.escape(part)}</a>')
    return " / ".join(crumbs)


def _header_cell(label: str, key: str, current: str, descending: bool, css: str = "") -> str:
    flip = "desc" if key == current and not descending else "asc"
    arrow = (" \u25be" if descending else " \u25b4") if key == current else ""
    cls = f' class="{css}"' if css else ""
    return f'<th{cls}><a href="?sort={key}&amp;order={flip}">{label}{arrow}</a></th>'


def render_page(url_path: str, root_name: str, entries: list[Entry], *, sort: str = "name",
                descending: bool = False, upload: bool = False, notice: str = "", error: str = "") -> bytes:
    """The whole HTML page for the folder at ``url_path`` (which ends in ``/``)."""
    title = html.escape(url_path)
    rows = []
    if url_path != "/":
        rows.append('<tr class="d"><td class="n"><a class="f" href="../">../</a></td><td class="s"></td>'
                    '<td class="m"></td></tr>')
    for entry in sorted_entries(entries, sort, descending):
        shown, iso = _stamp(entry.mtime_ns)
        name = html.escape(entry.path)
        if entry.kind == "d":
            rows.append(f'<tr class="d"><td class="n"><a class="f" href="{_href(entry.path)}/">{name}/</a></td>'
                        f'<td class="s">\u2014</td><td class="m"><time datetime="{iso}">{shown}</time></td></tr>')
        else:
            link = _href(entry.path)
            rows.append(f'<tr><td class="n"><a class="f" href="{link}">{name}</a><a class="g" href="{link}?dl" '
                        f'download title="download">\u2913</a></td><td class="s" title="{entry.size} bytes">'
                        f'{human_size(entry.size)}</td><td class="m"><time datetime="{iso}">{shown}</time></td></tr>')
    if not entries:
        rows.append('<tr><td class="n" colspan="3"><i>empty folder</i></td></tr>')
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">',
        f"<title>{title} \u2014 sockkit</title><style>{_STYLE}</style></head><body>",
        f"<h1>{breadcrumbs(url_path, root_name)}</h1>",
    ]
    if notice:
        parts.append(f'<p class="msg" role="status">{html.escape(notice)}</p>')
    if error:
        parts.append(f'<p class="msg err" role="alert">{html.escape(error)}</p>')
    count = sum(1 for e in entries if e.kind != "d")
    parts.append(f'<p class="tools">{count} file{"" if count == 1 else "s"}, '
                 f'{sum(1 for e in entries if e.kind == "d")} folders \u00b7 '
                 '<a href="?tar" download>download this folder (.tar)</a> \u00b7 <a href="?json">JSON</a></p>')
    parts.append("<table><thead><tr>" + _header_cell("Name", "name", sort, descending)
                 + _header_cell("Size", "size", sort, descending, "s")
                 + _header_cell("Modified (UTC)", "mtime", sort, descending) + "</tr></thead><tbody>")
    parts.extend(rows)
    parts.append("</tbody></table>")
    if upload:
        parts.append('<form id="upload" method="post" enctype="multipart/form-data">'
                     '<p><b>Upload</b> a file into this folder (or drop files on the page).</p>'
                     '<p><label><input type="checkbox" name="overwrite" value="1"> replace a file of the same '
                     'name</label></p><p><input type="file" name="file" required> <button>Upload</button></p>'
                     '<p id="status" role="status"></p></form>'
                     f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>\n")
    return "".join(parts).encode("utf-8")


def render_json(url_path: str, entries: list[Entry]) -> bytes:
    """The same listing for scripts: name, type, size, mtime (ns and ISO 8601)."""
    items = [{"name": e.path, "type": "directory" if e.kind == "d" else "file",
              "size": e.size, "mtime_ns": e.mtime_ns, "modified": _stamp(e.mtime_ns)[1]}
             for e in sorted_entries(entries, "name", False)]
    return json.dumps({"path": url_path, "entries": items}, ensure_ascii=False).encode("utf-8") + b"\n"


def render_message(status: int, title: str, message: str, back: str = "") -> bytes:
    """A small page for an error or a notice (also readable as text by curl)."""
    link = f'<p><a href="{html.escape(back, quote=True)}">back to the folder</a></p>' if back else ""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f"<title>{status} {html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{status} {html.escape(title)}</h1>"
            f"<p>{html.escape(message)}</p>{link}</body></html>\n").encode()
