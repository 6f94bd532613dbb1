"""Shared code of the pages' main threads: site/demix-main.py (demix page) and
site/tone-main.py (tone page). Both load it from their PyScript config's [files]
(site/pyscript.toml, site/tone.toml); the workers do not import it.

    by_id(id), q(selector)         the page's elements
    listen(target, event, fn)      addEventListener with a Python handler that stays alive
    floats(f32)                    a JS Float32Array -> array('f') (one copy)
    fetch_json(url)                GET and parse; RuntimeError naming the HTTP status
    connect_worker(id, ...)        the page's PyScript worker, once PyScript has started it
    show_error(...), hide_error()  the #error notice (the same markup on both pages) and
                                   body[data-error], the kind of the error on display
"""

import array
import asyncio
import json

import js
from pyodide.ffi import create_proxy
from pyscript import document
from pyscript.ffi import to_js  # Python dicts become plain JS objects

HELP_KINDS = ("no-webgpu", "device-lost", "oom")  # errors that link to the GPU diagnostics page

_proxies = []  # event handlers must outlive the code that made them: keep them referenced


def by_id(name):
    return document.getElementById(name)


def q(selector):
    return document.querySelector(selector)


def listen(target, event, fn, **options):
    """target.addEventListener(event, fn, options); options as keywords (e.g. passive=True)."""
    proxy = create_proxy(fn)
    _proxies.append(proxy)
    target.addEventListener(event, proxy, to_js(options) if options else None)


def floats(f32) -> array.array:
    """A JS Float32Array -> array('f') (one copy)."""
    out = array.array("f")
    out.frombytes(f32.to_bytes())
    return out


async def fetch_json(url):
    response = await js.fetch(url)
    if not response.ok:
        raise RuntimeError(f"the server answered {response.status}")
    return json.loads(await response.text())


async def connect_worker(tag_id, on_message, on_crash):
    """The worker of the page's <script type="py" worker id=tag_id>, once PyScript has
    started it: its messages go to on_message(event), its failures (e.g. its Python
    failed to import) to on_crash(event)."""
    el = by_id(tag_id)
    while not getattr(el, "xworker", None):  # PyScript attaches it to the tag
        await asyncio.sleep(0.05)
    worker = el.xworker
    listen(worker, "message", on_message)
    crash = create_proxy(on_crash)
    _proxies.append(crash)
    worker.onerror = crash
    return worker


def show_error(kind, title, message, detail=""):
    """The error notice: title, message, the technical detail (if any) below, the
    link to the diagnostics page for GPU errors; "cancelled" is shown as information."""
    by_id("error-title").textContent = title
    by_id("error-message").textContent = message
    pre = by_id("error-detail")
    pre.textContent = detail
    pre.hidden = not detail
    by_id("error-help").hidden = kind not in HELP_KINDS
    box = by_id("error")
    box.className = "notice " + ("info" if kind == "cancelled" else "error")
    box.hidden = False
    document.body.dataset.error = kind


def hide_error():
    by_id("error").hidden = True
    document.body.removeAttribute("data-error")
