"""Shared code of the pages' GPU workers: site/demix.py (demix page) and site/tone-worker.py
(tone page). Both load it from their PyScript config's [files] (site/pyscript.toml,
site/tone.toml); the pages' main threads do not import it.

    post(kind, **fields)        a message to the page: {"stemtone": kind, ...}
    post_error(...)             {"stemtone": "error", kind, title, message, detail};
                                post_no_webgpu(e) the one both pages show without WebGPU
    blob(data, mime)            bytes -> a JS Blob (WAV files, zips)
    Throttle(seconds)           at most one message per period (progress, live updates)
    GPUWorker                   base class: the page's origin and the WebGPU device, made
                                on first use and made again after a loss (the subclass's
                                forget_models() drops what was loaded on the old one);
                                hello() answers the page's "hello" with "ready";
                                lose_device() destroys the device as a driver reset
                                does (the pages' "lose-device" command, for the tests)
    fetch_weights(base, entry)  a manifest entry's safetensors file: from the Cache API
                                if there, else downloaded (with progress, cancellable)
                                and cached; always checked against its sha256
    WeightsError                the weights could not be downloaded, verified or read

The Cache API entries are keyed "URL?sha256=HEX": the demix page's main thread
(demix-main.py, is_cached) looks them up by that key to say "cached in this browser".
"""

import time

import js
from polyscript import xworker
from pyodide.ffi import JsException
from pyscript.ffi import to_js  # Python dicts become plain JS objects

from pycore.gpu.browser import create_device
from pycore.gpu.runtime import NoGPUError

WEIGHTS_URL = "weights/"
CACHE_NAME = "stemtone-weights"    # Cache API storage shared by the pages


class WeightsError(Exception):
    """A model's weights could not be downloaded, verified or read."""


# ------------------------------------------------------------------ messages to the page


def post(kind, /, **fields):
    xworker.postMessage(to_js({"stemtone": kind, **fields}))


def post_error(kind, title, message, detail="", **fields):
    """An error the page shows as is: kind is the page's body[data-error]."""
    post("error", kind=kind, title=title, message=message, detail=detail, **fields)


def post_no_webgpu(error: NoGPUError):
    post_error("no-webgpu", "WebGPU is not available", str(error))


def blob(data: bytes, mime: str):
    return js.Blob.new([to_js(data)], to_js({"type": mime}))


class Throttle:
    """due() is True at most once per `seconds` (always when forced): progress reports and
    live updates without flooding the page's main thread."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.last = float("-inf")

    def due(self, force=False) -> bool:
        now = time.perf_counter()
        if force or now - self.last >= self.seconds:
            self.last = now
            return True
        return False


# ------------------------------------------------------------------ the GPU device


class GPUWorker:
    """What every page worker has: the site's URL (page_kit.site_url(): a worker has no
    base URL of its own for the site's files)
    and one WebGPU device. Subclasses keep their loaded models and drop them in
    forget_models()."""

    def __init__(self):
        self.dev = None
        self.base = ""

    def forget_models(self):
        """Drop the models loaded on the device (out of memory, or the device is gone)."""

    def reset(self):
        """The device is lost: the next device() makes a new one."""
        self.dev = None
        self.forget_models()

    async def device(self):
        """The device, made on first use and again after a loss; NoGPUError without WebGPU."""
        if self.dev is None or self.dev.lost_reason is not None:
            self.reset()
            self.dev = await create_device()
        return self.dev

    def lose_device(self):
        """Destroy the device as a driver reset would: the work under way fails with
        DeviceLostError and the next device() makes a new one. The pages send
        {cmd: "lose-device"} when their document gets the event "stemtone-lose-device"
        (page_kit.connect_worker): the end-to-end tests' way to check the recovery."""
        if self.dev is not None:
            self.dev.device.destroy()

    async def hello(self, base):
        """The page's first message: note the site's URL, make the device and say "ready"
        (or why there is no GPU)."""
        self.base = str(base)
        try:
            dev = await self.device()
        except NoGPUError as e:
            post_no_webgpu(e)
            return
        post("ready", gpu=dev.describe().split(": ", 1)[-1], f16=dev.has_f16)


# ------------------------------------------------------------------ weights


async def fetch_weights(base, entry, progress=None, should_cancel=None, cancelled=None) -> bytes:
    """The safetensors file of a manifest entry ({"files": [{path, sha256, size}]}), from
    the site at `base` (page_kit.site_url(): ends in "/").

    progress(fraction, message, force) is told about reading the cache and downloading;
    should_cancel() is asked between downloaded chunks, and when it says yes the download
    stops and `cancelled` (an exception class) is raised."""
    (file,) = entry["files"]
    url = base + WEIGHTS_URL + file["path"]
    name = "weights/" + file["path"]  # for messages
    key = f"{url}?sha256={file['sha256']}"  # a new version of the file is a new entry
    report = progress or (lambda fraction, message, force=False: None)
    cache = await open_cache()
    data = None
    if cache is not None:
        hit = await cache.match(key)
        if hit:
            report(0.0, "Reading the model from this browser's cache…", True)
            data = js.Uint8Array.new(await hit.arrayBuffer())
            if await sha256(data) != file["sha256"]:
                await cache.delete(key)
                data = None
    if data is None:
        data = await download(url, name, int(file["size"]), report, should_cancel, cancelled)
        if await sha256(data) != file["sha256"]:
            raise WeightsError(f"the downloaded {name} does not match its sha256 in weights/manifest.json")
        if cache is not None:
            await store(cache, key, url, data)
    return data.to_bytes()


async def download(url, name, size, report, should_cancel, cancelled) -> "js.Uint8Array":
    """`size` bytes from `url`, chunk by chunk (see fetch_weights)."""
    mb = size / 1e6
    report(0.0, f"Downloading the model (0 of {mb:.1f} MB)…", True)
    try:
        response = await js.fetch(url)
    except JsException as e:
        raise WeightsError(f"the download of {name} failed ({e})") from None
    if not response.ok:
        raise WeightsError(f"the server answered {response.status} {response.statusText} for {name}")
    data = js.Uint8Array.new(size)
    got = 0
    reader = response.body.getReader()
    try:
        while True:
            chunk = await reader.read()
            if chunk.done:
                break
            n = chunk.value.length
            if got + n > size:
                raise WeightsError(f"{name} is larger than the {size:,} bytes in weights/manifest.json")
            data.set(chunk.value, got)
            got += n
            report(got / size, f"Downloading the model ({got / 1e6:.1f} of {mb:.1f} MB)…", False)
            if should_cancel is not None and should_cancel():
                await reader.cancel()
                raise cancelled()
    except JsException as e:
        raise WeightsError(f"the download of {name} was interrupted ({e})") from None
    if got != size:
        raise WeightsError(f"the downloaded {name} has {got:,} bytes, weights/manifest.json says {size:,}")
    return data


async def open_cache():
    """The weights cache, or None where the Cache API is unavailable (private mode, quota)."""
    try:
        return await js.caches.open(CACHE_NAME)
    except (JsException, AttributeError) as e:
        js.console.warn(f"stemtone: no Cache API, the weights are downloaded each time ({e})")
        return None


async def store(cache, key, url, data):
    """Cache the weights under `key`, dropping older versions of the same file."""
    try:
        for request in await cache.keys():
            if str(request.url).split("?")[0] == url and str(request.url) != key:
                await cache.delete(request)
        await cache.put(key, js.Response.new(data))
    except JsException as e:
        js.console.warn(f"stemtone: could not cache the weights ({e})")


async def sha256(data) -> str:
    digest = js.Uint8Array.new(await js.crypto.subtle.digest("SHA-256", data))
    return digest.to_bytes().hex()
