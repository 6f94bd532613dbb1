"""Ring buffers and latency arithmetic of the live tone page (site/tone.html).

Pure Python (no js, no numpy), shared by the page's main thread (tone-main.py), its
GPU worker (tone-worker.py) and the native tests (tests/test_tone_ring.py). The two
AudioWorklet processors (tone-worklets.js) receive the layout below through their
processorOptions, so the JavaScript side holds no numbers of its own.

A ring is one SharedArrayBuffer with a single writer and a single reader:

    bytes 0 .. 4 HEADER   Int32 slots (and Float32 for the levels, same bytes)
    then                  `capacity` float32 samples

Positions are absolute sample counts since the take started (Int32: 37 hours at
16 kHz); sample p lives at data[p % capacity]. The writer stores its position with
Atomics.store after writing the samples, so a reader that loads it sees them.

The capture ring (worklet -> worker) is large (CAPTURE_SECONDS): when the worker is
slower than real time, the take is still processed in order from it. The writer never
waits: once it is more than `capacity` ahead, the oldest samples are overwritten; the
reader notices (reader_plan / overwritten) and counts them as lost, and the take gets
silence in their place. The output ring (worker -> playback worklet) is small: the
playback worklet plays output position t - play_offset at audio time t and plays
silence (counted as a late block) when the worker has not written it yet.

The worker reads the capture ring in engine blocks of 8 ms (BLOCK, the lowest latency)
or, where the GPU cannot do an 8 ms block's work in 8 ms, of 20 ms (DDSP-VST's hop: a
block's fixed costs are spread over 2.5 times the audio); choose_block picks the size
from the work of each measured at start-up. It keeps `depth` blocks in flight on the
GPU (pipeline_depth, from the round trip it measures then); the playback buffer holds
one block of slack for each, so a block's output is on time as long as its GPU work
and round trip fit in depth blocks.
"""

import math

SAMPLE_RATE = 16000
BLOCK = 128                 # Web Audio's render quantum: the capture worklet's block
BLOCK_SIZES = (128, 320)    # engine blocks the worker may read: 8 ms, or 20 ms when 8 ms cannot keep up
REAL_TIME_SHARE = 0.8       # a block size keeps real time when its work takes at most this share of it
PLAYBACK_BUFFER = 128       # output samples of slack per block in flight (8 ms; one block)
MAX_DEPTH = 16              # blocks in flight at most (128 ms of pipeline)
LATENCY_BUDGET_MS = 50.0
CAPTURE_SECONDS = 20        # the backlog the worker may fall behind before input is lost
OUTPUT_SECONDS = 2
MAX_CHUNK = 4096            # samples per engine push when catching up (bigger GPU batches)
SAFETY = 4 * BLOCK          # a reader keeps this far from being overwritten

# header slots (Int32 unless noted)
WRITE = 0          # writer's position
READ = 1           # reader's position (informational: the writer never waits)
STARTED = 2        # capture: 1 once the first block was written
START_FRAME = 3    # capture: the AudioContext frame of the first captured sample
STOP = 4           # capture: set by the page; the worklet then stops writing
LATE = 5           # output: quanta the playback worklet found missing
PLAYED = 6         # output: quanta played on time
LEVEL = 7          # Float32: peak of the last quantum (input level / output level)
HEADER = 8
HEADER_BYTES = 4 * HEADER

SLOTS = {"WRITE": WRITE, "READ": READ, "STARTED": STARTED, "START_FRAME": START_FRAME, "STOP": STOP,
         "LATE": LATE, "PLAYED": PLAYED, "LEVEL": LEVEL}


def capture_capacity(seconds=CAPTURE_SECONDS) -> int:
    """The capture ring's capacity for `seconds` of backlog (the tone page's URL may ask
    for another length: tone.html?capture-seconds=S), in whole blocks, 1 to 120 s; text
    that is not a finite number gives the default."""
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        seconds = CAPTURE_SECONDS
    if not math.isfinite(seconds):
        seconds = CAPTURE_SECONDS
    seconds = min(max(seconds, 1.0), 120.0)
    return round(seconds * SAMPLE_RATE / BLOCK) * BLOCK


def ring_bytes(capacity: int) -> int:
    """Size of a ring's SharedArrayBuffer."""
    return HEADER_BYTES + 4 * capacity


def segments(position: int, count: int, capacity: int) -> list:
    """The (offset, length) pieces of data[] that hold samples position .. position +
    count - 1: one piece, or two when they wrap around the end."""
    if count < 0 or count > capacity:
        raise ValueError(f"ring: cannot address {count} samples in a ring of {capacity}")
    start = position % capacity
    first = min(count, capacity - start)
    pieces = [(start, first)] if first else []
    if count > first:
        pieces.append((0, count - first))
    return pieces


def reader_plan(read: int, written: int, capacity: int, block: int = BLOCK, max_chunk: int = MAX_CHUNK):
    """What a reader at `read` does when the writer is at `written`:
    (lost, count): first skip `lost` samples that are (or are about to be) overwritten,
    then read `count` samples (0 while less than a block is waiting). A reader that keeps
    up reads one block at a time (lowest latency); one that is behind reads up to
    max_chunk whole blocks at once (fewer, larger GPU batches)."""
    if written < read:
        raise ValueError(f"ring: reader at {read} is ahead of the writer at {written}")
    lost = max(0, written - read - (capacity - SAFETY))
    waiting = written - read - lost
    count = min(waiting, max_chunk) // block * block
    return lost, count


def overwritten(read: int, count: int, written_after: int, capacity: int, block: int = BLOCK) -> int:
    """How many of the samples read .. read + count - 1, copied while the writer moved on
    to `written_after`, may have been overwritten during the copy (the oldest ones). The
    writer may already be writing its next block, so that block counts too."""
    return max(0, min(count, written_after + block - capacity - read))


def pipeline_depth(work_ms: float, round_trip_ms: float, block: int = BLOCK, sample_rate: int = SAMPLE_RATE,
                   cap: int = MAX_DEPTH) -> int:
    """Blocks the worker keeps in flight (issued, their readback not yet back) so that a
    GPU round trip never stalls the audio: a block's result comes work_ms (its GPU work,
    which must fit in one block to keep real time at all) + round_trip_ms (submit to
    mapped readback; the worker passes a high percentile) after its input arrived, and a
    new block arrives every block / sample_rate s. 1 to `cap` (a slower adapter is
    behind real time whatever the depth)."""
    block_ms = 1000.0 * block / sample_rate
    need = math.ceil((max(0.0, work_ms) + max(0.0, round_trip_ms)) / block_ms - 1e-9)
    return min(cap, max(1, need))


def choose_block(work_ms, sizes=BLOCK_SIZES, sample_rate: int = SAMPLE_RATE, share: float = REAL_TIME_SHARE) -> int:
    """The engine block (samples) the worker reads: the smallest of `sizes` whose GPU work
    (work_ms[i] for sizes[i], measured at start-up, round trip excluded) takes at most
    `share` of its duration (the rest absorbs jitter), else the one with the smallest
    work per audio time (the page then says it cannot keep real time)."""
    if len(work_ms) != len(sizes) or not sizes:
        raise ValueError(f"choose_block: {len(work_ms)} work figures for {len(sizes)} block sizes")
    ratio = [max(0.0, w) / (1000.0 * n / sample_rate) for w, n in zip(work_ms, sizes)]
    for n, r in zip(sizes, ratio):
        if r <= share:
            return n
    return sizes[min(range(len(sizes)), key=lambda i: (ratio[i], sizes[i]))]


def play_offset(engine_lag: int, depth: int = 1, buffer: int = PLAYBACK_BUFFER) -> int:
    """Output position the playback worklet plays at audio time t: t - play_offset.
    engine_lag: the most input samples (counted in whole capture blocks) that arrive
    after an output sample's position before the engine has computed it; then `buffer`
    samples of slack for each of the `depth` blocks in flight (pipeline_depth)."""
    return engine_lag + depth * buffer


def latency_breakdown(engine_latency: int, depth: int = 1, block: int = BLOCK, buffer: int = PLAYBACK_BUFFER,
                      sample_rate: int = SAMPLE_RATE) -> dict:
    """The algorithmic latency the page states, in ms: the engine's (analysis lookahead +
    synthesis hop), one engine block (8 or 20 ms, choose_block), the playback buffer (one
    buffer per block in flight: depth x the block), their total and whether it is within
    the budget."""
    ms = 1000.0 / sample_rate
    parts = {"engine": engine_latency * ms, "block": block * ms, "buffer": depth * buffer * ms}
    total = sum(parts.values())
    return dict(parts, total=total, budget=LATENCY_BUDGET_MS, within=total <= LATENCY_BUDGET_MS + 1e-9,
                depth=depth)
