"""By hand (not collected by pytest; minutes on lavapipe): the official htdemucs
configuration with random weights -- HTDemucs defaults plus bottom_channels=512,
dconv_mode=3, t_layers=5, segment=Fraction(39, 5) (41,984,456 parameters, as the
published 955717e8 checkpoint) -- one 7.8 s segment layer by layer, then apply_model
(split, overlap 0.25, shifts 0) on 20 s of real music against the streamed separation.

    .venv/bin/python tests/htdemucs_official_parity.py [f32|f16]
"""
import sys, time
from fractions import Fraction
sys.path.insert(0, "tests"); sys.path.insert(0, ".")
import numpy as np, torch
torch.set_num_threads(1)
import test_htdemucs as T
from pycore.gpu.native import get_device
from pycore.models.htdemucs import HTDemucs
from pycore.demix.htdemucs import HTDemucsStream
OFFICIAL = dict(bottom_channels=512, dconv_mode=3, t_layers=5, segment=Fraction(39, 5))  # rest: HTDemucs defaults
dev = get_device()
model = T.reference(seed=3, **OFFICIAL)
print("params", sum(p.numel() for p in model.parameters()), flush=True)
ref = T.capture(model)
mix = T.real_music_clip(7.8)[None]
t = time.time()
with torch.no_grad():
    want = model(torch.from_numpy(mix)).numpy()
    e = model.freq_emb(torch.arange(ref["encoder.0"].shape[-2])).t()[None, :, :, None]
    ref["encoder.0"] = ref["encoder.0"] + model.freq_emb_scale * e
    x, xt = ref["crosstransformer"], ref["crosstransformer_t"]
    b, c, f, tt = x.shape
    ref["crosstransformer"] = model.channel_downsampler(x.reshape(b, c, f * tt)).reshape(b, -1, f, tt)
    ref["crosstransformer_t"] = model.channel_downsampler_t(xt)
print("torch segment s", time.time() - t, flush=True)
kw = {k: (float(v) if isinstance(v, Fraction) else v) for k, v in OFFICIAL.items()}
dtype = sys.argv[1] if len(sys.argv) > 1 else "f32"
ours = HTDemucs(dev, T.entries(model), kw, sources=T.SOURCES, dtype=dtype)
for i in range(2):
    trace = {}
    t = time.time()
    got = ours.forward(dev.tensor(mix.tobytes(), mix.shape), trace=trace).numpy()
    print(f"ours segment run {i} s", time.time() - t, flush=True)
print({k: round(T.sdr(ref[k].numpy(), v.numpy()), 1) for k, v in trace.items()}, flush=True)
print("segment SDR per stem", [round(T.sdr(want[0, s], got[0, s]), 1) for s in range(4)], flush=True)
del trace
clip = T.real_music_clip(20.0)
t = time.time()
with torch.no_grad():
    want = T._apply_model()(model, torch.from_numpy(clip)[None], shifts=0, split=True, overlap=0.25)[0].numpy()
print("torch apply 20 s", time.time() - t, flush=True)
t = time.time()
got = T._stream_all(HTDemucsStream([ours], T.SOURCES, 2), clip, 44100 * 3)
print("ours apply 20 s", time.time() - t, flush=True)
print("20 s SDR per stem", {s: round(T.sdr(want[k], np.stack(got[s])), 1) for k, s in enumerate(T.SOURCES)}, flush=True)
