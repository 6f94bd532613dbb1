"""The live tone page's ring buffers and latency arithmetic (site/tone_ring.py).

The page's worker and its AudioWorklets share two single-writer rings on
SharedArrayBuffers; here a Python model of both sides (the writer as the capture
worklet does it, the reader as tone-worker.py's Take.issue does it) runs on plain lists
so that wraparound, overflow and the latency budget are checked without a browser.
"""

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "site"))
import tone_ring as R  # noqa: E402


class ModelRing:
    """A ring as the worklet writes it: data[p % capacity] = sample p, then WRITE = p + n."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.data = [0.0] * capacity
        self.written = 0

    def write(self, samples):
        for i, v in enumerate(samples):
            self.data[(self.written + i) % self.capacity] = v
        self.written += len(samples)

    def read(self, position, count):
        out = []
        for offset, n in R.segments(position, count, self.capacity):
            out.extend(self.data[offset:offset + n])
        return out


def test_segments_cover_the_samples_in_order():
    rng = random.Random(0)
    for _ in range(500):
        capacity = rng.randint(1, 50)
        position = rng.randint(0, 10 * capacity)
        count = rng.randint(0, capacity)
        pieces = R.segments(position, count, capacity)
        assert len(pieces) <= 2 and sum(n for _, n in pieces) == count
        flat = [o + i for o, n in pieces for i in range(n)]
        assert flat == [(position + i) % capacity for i in range(count)]
        assert all(n > 0 and 0 <= o and o + n <= capacity for o, n in pieces)
    with pytest.raises(ValueError, match="ring"):
        R.segments(0, 11, 10)


def test_reader_plan_blocks_chunks_and_overflow():
    cap = 20 * R.BLOCK + R.SAFETY
    # keeping up: one block at a time, nothing while less than a block waits
    assert R.reader_plan(0, R.BLOCK - 1, cap) == (0, 0)
    assert R.reader_plan(0, R.BLOCK, cap) == (0, R.BLOCK)
    assert R.reader_plan(256, 256 + R.BLOCK + 5, cap) == (0, R.BLOCK)
    # behind: whole blocks up to max_chunk
    assert R.reader_plan(0, 10 * R.BLOCK + 7, cap, max_chunk=4 * R.BLOCK) == (0, 4 * R.BLOCK)
    assert R.reader_plan(0, 3 * R.BLOCK + 7, cap, max_chunk=4 * R.BLOCK) == (0, 3 * R.BLOCK)
    # overflow: skip to SAFETY samples behind the capacity
    lost, count = R.reader_plan(0, cap + 1000, cap, max_chunk=10 ** 9)
    assert lost == 1000 + R.SAFETY and lost + count <= cap + 1000
    with pytest.raises(ValueError, match="ahead of the writer"):
        R.reader_plan(10, 5, cap)


def test_overwritten_counts_samples_the_writer_reached():
    cap = 1000
    assert R.overwritten(0, 500, 500, cap) == 0
    assert R.overwritten(0, 500, cap - R.BLOCK, cap) == 0
    assert R.overwritten(0, 500, cap - R.BLOCK + 10, cap) == 10   # the next block is being written
    assert R.overwritten(0, 500, 5 * cap, cap) == 500


def run_stream(capacity, pushes, read_every, max_chunk):
    """The writer pushes `pushes` blocks; after every `read_every`-th, the reader plans and
    reads once. Returns (what was written, up to where the reader got; what the reader
    got, silence where it lost samples; the number of lost samples)."""
    ring = ModelRing(capacity)
    signal, got, read, lost_total = [], [], 0, 0
    for p in range(pushes):
        block = [float(p * R.BLOCK + i + 1) for i in range(R.BLOCK)]   # never 0: zeros mark losses
        ring.write(block)
        signal.extend(block)
        if p % read_every != read_every - 1:
            continue
        lost, count = R.reader_plan(read, ring.written, capacity, max_chunk=max_chunk)
        got.extend([0.0] * lost)
        read += lost
        lost_total += lost
        if count:
            x = ring.read(read, count)
            gone = R.overwritten(read, count, ring.written, capacity)
            got.extend([0.0] * gone + x[gone:])
            lost_total += gone
            read += count
    return signal[:len(got)], got, lost_total


@pytest.mark.parametrize("read_every, max_chunk, loses", [
    (1, R.MAX_CHUNK, False),      # keeping up, block by block
    (3, 2 * R.BLOCK, True),       # falling behind steadily: the ring overflows
    (50, 10 ** 9, True),          # rare reads of everything: 50 blocks do not fit in 40
    (10, 10 ** 9, False),         # rare but in time
])
def test_reader_gets_the_signal_in_order_with_silence_for_what_was_lost(read_every, max_chunk, loses):
    signal, got, lost_total = run_stream(40 * R.BLOCK, 300, read_every, max_chunk)
    assert len(got) == len(signal) > 0
    assert sum(1 for v in got if v == 0.0) == lost_total
    assert all(g == v for g, v in zip(got, signal) if g != 0.0)
    assert (lost_total > 0) == loses


def test_latency_breakdown_and_play_offset():
    parts = R.latency_breakdown(448)
    assert parts["engine"] == pytest.approx(28.0) and parts["block"] == pytest.approx(8.0)
    assert parts["buffer"] == pytest.approx(1000 * R.PLAYBACK_BUFFER / R.SAMPLE_RATE)
    assert parts["total"] == pytest.approx(parts["engine"] + parts["block"] + parts["buffer"])
    assert parts["within"] and parts["total"] <= R.LATENCY_BUDGET_MS and parts["depth"] == 1
    assert not R.latency_breakdown(1000)["within"]
    assert R.play_offset(512) == 512 + R.PLAYBACK_BUFFER
    # three blocks in flight: three buffers of slack, 16 ms more
    deep = R.latency_breakdown(448, depth=3)
    assert deep["buffer"] == pytest.approx(24.0) and deep["total"] == pytest.approx(parts["total"] + 16.0)
    assert not deep["within"] and deep["depth"] == 3
    assert R.play_offset(512, depth=3) == 512 + 3 * R.PLAYBACK_BUFFER


@pytest.mark.parametrize("work_ms, round_trip_ms, want", [
    (2.0, 0.5, 1),        # a fast GPU: work and round trip fit in one 8 ms block
    (7.0, 1.5, 2),        # just over one block
    (2.0, 8.0, 2),        # a 5-15 ms Chrome tail
    (3.0, 100.0, 13),     # Firefox's 100 ms polling: 103 ms = 13 blocks
    (50.0, 500.0, R.MAX_DEPTH),   # capped
    (0.0, 0.0, 1),
])
def test_pipeline_depth_covers_work_and_round_trip(work_ms, round_trip_ms, want):
    depth = R.pipeline_depth(work_ms, round_trip_ms)
    assert depth == want
    block_ms = 1000 * R.BLOCK / R.SAMPLE_RATE
    if depth < R.MAX_DEPTH:   # the slack it gives holds the block's result, one block less would not
        assert depth * block_ms >= work_ms + round_trip_ms
        assert depth == 1 or (depth - 1) * block_ms < work_ms + round_trip_ms


def test_header_layout_is_consistent():
    slots = sorted(R.SLOTS.values())
    assert slots == list(range(len(slots))) and len(slots) <= R.HEADER
    assert R.ring_bytes(100) == R.HEADER_BYTES + 400
    assert R.CAPTURE_SECONDS * R.SAMPLE_RATE % R.BLOCK == 0 and R.MAX_CHUNK % R.BLOCK == 0


@pytest.mark.parametrize("asked, seconds", [(R.CAPTURE_SECONDS, R.CAPTURE_SECONDS), ("1", 1), (0.25, 1), (1e9, 120),
                                            ("nan", R.CAPTURE_SECONDS), ("abc", R.CAPTURE_SECONDS)])
def test_capture_capacity_is_whole_blocks_within_its_range(asked, seconds):
    capacity = R.capture_capacity(asked)
    assert capacity % R.BLOCK == 0 and capacity == pytest.approx(seconds * R.SAMPLE_RATE, abs=R.BLOCK / 2)
    # the smallest ring still holds what one read takes and the reader's safety margin
    assert capacity > R.MAX_CHUNK + R.SAFETY


def test_choose_block_prefers_8_ms_when_the_gpu_keeps_up():
    # work per block (ms, round trip excluded) for 128 and 320 samples (8 and 20 ms)
    assert R.choose_block([3.0, 6.0]) == 128                  # 8 ms blocks in 3 ms: real time
    assert R.choose_block([0.8 * 8.0, 16.0]) == 128           # exactly the share allowed
    assert R.choose_block([7.0, 14.0]) == 320                 # 8 ms blocks too tight, 20 ms fine
    assert R.choose_block([11.5, 17.2]) == 320                # lavapipe-like: 8 ms blocks behind
    # neither keeps real time: the smaller work per audio time (SwiftShader-like)
    assert R.choose_block([42.0, 80.0]) == 320
    assert R.choose_block([20.0, 80.0]) == 128
    with pytest.raises(ValueError, match="2 block sizes"):
        R.choose_block([1.0])


def test_twenty_ms_blocks_state_their_latency():
    # a 20 ms block and a 20 ms buffer per block in flight: 28 + 20 + 2 x 20 ms
    parts = R.latency_breakdown(448, depth=2, block=320, buffer=320)
    assert parts["block"] == pytest.approx(20.0) and parts["buffer"] == pytest.approx(40.0)
    assert parts["total"] == pytest.approx(88.0) and not parts["within"]
    assert R.play_offset(640, depth=2, buffer=320) == 640 + 2 * 320
    # the reader takes whole 20 ms blocks from the 8 ms quanta the capture writes
    cap = 20 * R.BLOCK + R.SAFETY
    assert R.reader_plan(0, 2 * R.BLOCK, cap, block=320) == (0, 0)
    assert R.reader_plan(0, 3 * R.BLOCK, cap, block=320) == (0, 320)
    assert R.reader_plan(320, 7 * R.BLOCK, cap, block=320) == (0, 320)
