// The tone page's two AudioWorklet processors: JavaScript only because the browser runs
// audio callbacks nowhere else. They only copy samples between the audio graph and the
// SharedArrayBuffer rings that the page's Python GPU worker (tone-worker.py) reads and
// writes; the ring layout and every number come from site/tone_ring.py through
// processorOptions { capture, output: SharedArrayBuffer, header, capacity(ies), slots,
// playOffset, block }.
//
//   stemtone-capture   microphone -> capture ring (mono, one 128-sample quantum per call);
//                      never waits: the Python side notices overwritten samples
//   stemtone-playback  output ring -> speakers: at audio time t (samples since the first
//                      captured one) it plays output position t - playOffset, or silence
//                      when the worker has not produced it yet (counted as a late block,
//                      faded out and in: no clicks, no stutter, the timing never slips)

function ring(sab, header, capacity) {
  return {
    head: new Int32Array(sab, 0, header),
    levels: new Float32Array(sab, 0, header),
    data: new Float32Array(sab, header * 4, capacity),
    capacity,
  };
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.s = o.slots;
    this.ring = ring(o.capture, o.header, o.captureCapacity);
  }

  process(inputs) {
    const { head, levels, data, capacity } = this.ring;
    const s = this.s;
    if (Atomics.load(head, s.STOP)) return false;  // the take ended: no more writes
    const channels = inputs[0];
    const n = 128;
    let pos = Atomics.load(head, s.WRITE);
    if (!Atomics.load(head, s.STARTED)) {
      Atomics.store(head, s.START_FRAME, currentFrame);
      Atomics.store(head, s.STARTED, 1);
    }
    let peak = 0;
    for (let i = 0; i < n; i++) {
      let v = 0;  // no input connected (yet): silence keeps the timeline
      for (let c = 0; c < channels.length; c++) v += channels[c][i];
      if (channels.length > 1) v /= channels.length;
      data[(pos + i) % capacity] = v;
      const a = Math.abs(v);
      if (a > peak) peak = a;
    }
    levels[s.LEVEL] = peak;
    Atomics.store(head, s.WRITE, pos + n);
    Atomics.notify(head, s.WRITE);  // wakes the worker's Atomics.waitAsync
    return true;
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.s = o.slots;
    this.capture = ring(o.capture, o.header, o.captureCapacity);
    this.out = ring(o.output, o.header, o.outputCapacity);
    this.offset = o.playOffset;
    this.gain = 0;     // ramps to 1 while output is on time, to 0 while it is late
    this.last = 0;     // the last sample played, faded out when the next block is late
  }

  process(inputs, outputs) {
    const y = outputs[0][0];
    const s = this.s;
    const cap = this.capture.head;
    const { head, levels, data, capacity } = this.out;
    if (!Atomics.load(cap, s.STARTED)) return true;  // silence until the first capture
    const first = currentFrame - Atomics.load(cap, s.START_FRAME) - this.offset;
    const n = y.length;
    const ready = first >= 0 && Atomics.load(head, s.WRITE) >= first + n && Atomics.load(head, s.WRITE) - capacity <= first;
    if (first >= 0 && !Atomics.load(cap, s.STOP)) Atomics.add(head, ready ? s.PLAYED : s.LATE, 1);
    let peak = 0;
    const step = 1 / 64;  // 4 ms ramps
    for (let i = 0; i < n; i++) {
      if (ready) {
        this.gain = Math.min(1, this.gain + step);
        this.last = data[(first + i) % capacity];
        y[i] = this.gain * this.last;
      } else {
        this.gain = Math.max(0, this.gain - step);
        y[i] = this.gain * this.last;
      }
      const a = Math.abs(y[i]);
      if (a > peak) peak = a;
    }
    levels[s.LEVEL] = peak;
    return true;
  }
}

registerProcessor("stemtone-capture", CaptureProcessor);
registerProcessor("stemtone-playback", PlaybackProcessor);
