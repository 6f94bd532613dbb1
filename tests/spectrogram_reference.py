"""float64 references of kernels/spectrogram.wgsl's random draws (its header's
definitions), for tests/test_spectrogram.py and tests/test_learn_train.py."""

import numpy as np


def pcg(v):
    m = 0xFFFFFFFF
    state = (v * 747796405 + 2891336453) & m
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & m
    return ((word >> 22) ^ word) & m


def uniform01(seed, i, salt):
    return (float(pcg((pcg(seed ^ salt) + i) & 0xFFFFFFFF) >> 8) + 1.0) / 16777216.0


def feed_back_reference(z, pred, bin_std, count, threshold, scale, seed):
    """feed_back's result (float64) and which frames [S, B] it replaced."""
    S, B, F = z.shape
    want, replaced = z.astype(np.float64).copy(), np.zeros((S, B), bool)
    salt = pcg(seed ^ 0x165667B1)
    for s in range(1, S):
        for b in range(B):
            r = s * B + b
            if pcg((salt + count * S * B + r) & 0xFFFFFFFF) >= threshold:
                continue
            replaced[s, b] = True
            for f in range(F):
                k = (count * S * B * F + r * F + f) & 0xFFFFFFFF
                u1, u2 = uniform01(seed, k, 0x9E3779B9), uniform01(seed, k, 0x85EBCA6B)
                want[s, b, f] = pred[s - 1, b, f] + scale * bin_std[f] * np.sqrt(-2 * np.log(u1)) * np.cos(
                    2 * np.pi * u2)
    return want, replaced
