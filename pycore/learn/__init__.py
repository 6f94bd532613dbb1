"""Learn a sound: train a MAGNet-style spectral LSTM on one clip and generate new audio
from it, all on the GPU (browser and native). `clip` turns audio into frames, `train`
runs epochs of truncated BPTT with Adam, `generate` samples frames and reconstructs
audio, `files` is the native file job behind `stemtone learn` / `stemtone generate`."""
