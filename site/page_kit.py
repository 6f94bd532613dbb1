"""Shared code of the pages' main threads: site/demix-main.py (demix page) and
site/tone-main.py (tone page). Both load it from their PyScript config's [files]
(site/pyscript.toml, site/tone.toml); the workers do not import it.

    by_id(id), q(selector)         the page's elements
    listen(target, event, fn)      addEventListener with a Python handler that stays alive
    floats(f32)                    a JS Float32Array -> array('f') (one copy)
    fetch_json(url)                GET and parse; RuntimeError naming the HTTP status,
                                   ValueError naming the URL for an answer that is not JSON
    site_url()                     the site's root URL, which the pages' workers are given
                                   (the site may live in a subfolder: https://host/stemtone/)
    connect_worker(id, ...)        the page's PyScript worker, once PyScript has started it;
                                   the document event "stemtone-lose-device" (tests) asks it
                                   to destroy its GPU device, as a driver reset would
    show_error(...), hide_error()  the #error notice (the same markup on both pages) and
                                   body[data-error], the kind of the error on display
"""

import array
import asyncio
import json

import js
from pyodide.ffi import JsException, create_proxy
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


def site_url() -> str:
    """The URL of the folder the pages are in (every page is at the site's top), ending
    in "/". The pages' own URLs are relative; a worker is given this for its fetches."""
    return str(js.URL.new(".", js.location.href).href)


async def fetch_json(url):
    """GET and parse: RuntimeError when the server refuses, ValueError naming `url` when
    the answer is not JSON."""
    response = await js.fetch(url)
    if not response.ok:
        raise RuntimeError(f"the server answered {response.status}")
    try:
        return json.loads(await response.text())
    except ValueError as e:
        raise ValueError(f"{url}: not JSON ({e})") from None


def show_crash(e):
    """A bug in the page's own code (exception e, being handled): the crash notice with
    its traceback, instead of a page left inconsistent."""
    import traceback

    js.console.error(traceback.format_exc())
    show_error("crash", "The page crashed", f"{type(e).__name__}: {e}", traceback.format_exc())


def guarded(handler):
    """handler(event) (a function or a coroutine function) with any exception shown by
    show_crash."""
    if asyncio.iscoroutinefunction(handler):
        async def run_async(event):
            try:
                await handler(event)
            except Exception as e:
                show_crash(e)
        return run_async

    def run(event):
        try:
            handler(event)
        except Exception as e:
            show_crash(e)
    return run


async def connect_worker(tag_id, on_message, on_crash):
    """The worker of the page's <script type="py" worker id=tag_id>, once PyScript has
    started it: its messages go to on_message(event) (guarded: an exception there shows
    the crash notice), its failures (e.g. its Python failed to import) to on_crash(event)."""
    el = by_id(tag_id)
    while not getattr(el, "xworker", None):  # PyScript attaches it to the tag
        await asyncio.sleep(0.05)
    worker = el.xworker
    listen(worker, "message", guarded(on_message))
    crash = create_proxy(on_crash)
    _proxies.append(crash)
    worker.onerror = crash
    # tests: a device lost as a driver reset loses it (worker_kit.GPUWorker.lose_device)
    listen(document, "stemtone-lose-device", lambda e: worker.postMessage(to_js({"cmd": "lose-device"})))
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


# ------------------------------------------------------------------ audio files


class DecodeError(Exception):
    """A file the browser cannot turn into audio (the message says why, for the user)."""


async def decode_audio(file, sample_rate: int, max_channels: int = 2):
    """A File -> AudioBuffer at sample_rate with at most max_channels channels (more are
    mixed down with Web Audio's standard speaker downmix, e.g. 5.1 -> stereo, or to mono)."""
    try:
        data = await file.arrayBuffer()
    except JsException as e:
        raise DecodeError(f"the file could not be read ({e})") from None
    if data.byteLength == 0:
        raise DecodeError("the file is empty")
    try:
        audio = await js.OfflineAudioContext.new(1, 1, sample_rate).decodeAudioData(data)
    except JsException as e:
        reason = str(e).split(": ", 1)[-1]
        raise DecodeError(f"this browser cannot decode it as audio ({reason}). It may not be an audio file, "
                          "be damaged, or use a format this browser does not support") from None
    if audio.length == 0:
        raise DecodeError("it contains no audio samples")
    if audio.numberOfChannels > max_channels:
        ctx = js.OfflineAudioContext.new(max_channels, audio.length, sample_rate)
        src = ctx.createBufferSource()
        src.buffer = audio
        src.connect(ctx.destination)
        src.start()
        audio = await ctx.startRendering()
    return audio
