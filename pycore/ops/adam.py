"""Adam with gradient clipping by global norm (kernels/adam.wgsl), on GPU tensors.

    opt = Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, clip=1.0)
    opt.step(grads)                   grads: name -> Tensor of the param's shape
                                      (= opt.advance(); opt.record(grads))
    opt.state() / opt.load_state(d)   moments and step count, to save and resume training

Each step equals torch.nn.utils.clip_grad_norm_(params, clip) followed by
torch.optim.Adam(params, lr, betas, eps).step() (clip=0: no clipping). The parameters are
updated in place on the GPU: per tensor one dispatch of partial sums of squares, one
dispatch that adds them up (the global norm), then one update dispatch per tensor.

A training step recorded as a plan (pycore.gpu.runtime.Plan) holds record()'s dispatches;
the host calls advance() before each replay: it counts the step and writes the bias
corrections 1 - beta1^t and sqrt(1 - beta2^t) (computed in double, stored as float32,
as a kernel parameter would be) into a tensor that the update reads.
"""

from __future__ import annotations

import math
import struct

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, rand, rng
from . import expect, expect_loop_steps, same_device

WG = 64
CHUNK = 4096  # gradient elements per partial sum (adam.wgsl)


class Adam:
    def __init__(self, params: dict, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, clip=1.0):
        op = "Adam"
        expect(op, isinstance(params, dict) and params, "params must be a non-empty dict name -> Tensor")
        for name, t in params.items():
            expect(op, isinstance(t, Tensor) and t.dtype == "f32", f"params[{name!r}] must be an f32 Tensor")
        expect(op, lr > 0 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1 and eps > 0 and clip >= 0,
               f"need lr > 0, betas in [0, 1), eps > 0, clip >= 0; got {lr}, {betas}, {eps}, {clip}")
        self.dev = same_device(op, *params.values())
        self.params, self.lr, self.betas, self.eps, self.clip = params, lr, betas, eps, clip
        self.offsets, n_parts = {}, 0
        for name, t in params.items():
            self.offsets[name] = n_parts
            n_parts += ceil_div(t.size, CHUNK)
        expect_loop_steps(op, n_parts + 1, f"{n_parts} partial norms")
        self.n_parts = n_parts
        self.parts = self.dev.empty((n_parts + 1,))     # partial sums, then their total
        self.bc = self.dev.tensor([1.0, 1.0])   # bias corrections of the current step (advance())
        zeros = {name: bytes(t.nbytes) for name, t in params.items()}
        self.m = {name: self.dev.tensor(zeros[name], t.shape) for name, t in params.items()}
        self.v = {name: self.dev.tensor(zeros[name], t.shape) for name, t in params.items()}
        self.t = 0

    def step(self, grads: dict):
        self.advance()
        self.record(grads)

    def advance(self):
        """Count a step and write its bias corrections (before the step's dispatches run)."""
        self.t += 1
        b1, b2 = self.betas
        self.dev.write(self.bc, struct.pack("<2f", 1 - b1 ** self.t, math.sqrt(1 - b2 ** self.t)))

    def record(self, grads: dict):
        """The step's dispatches: clipping by the global norm, then the update of every
        parameter in place (with the bias corrections advance() wrote)."""
        op = "Adam.step"
        expect(op, set(grads) == set(self.params), f"grads must have the keys {sorted(self.params)}")
        for name, g in grads.items():
            expect(op, isinstance(g, Tensor) and g.size == self.params[name].size,
                   f"grads[{name!r}] must match params[{name!r}] {self.params[name].shape}", g)
        dev = self.dev
        b1, b2 = self.betas
        common = dict(n_parts=self.n_parts, lr=self.lr, beta1=b1, beta2=b2, eps=self.eps, clip=self.clip,
                      parts=self.parts, bc=self.bc)
        if self.clip > 0:
            k = dev.kernel("adam", "sumsq")
            for name, p in self.params.items():
                dev.run(k, ceil_div(p.size, CHUNK), grad=grads[name], param=p, m=self.m[name], v=self.v[name],
                        n=p.size, part_off=self.offsets[name], **common)
            # the total: one invocation (it reads none of the tensors bound with it)
            dev.run(dev.kernel("adam", "norm"), 1, grad=grads[name], param=p, m=self.m[name], v=self.v[name],
                    n=p.size, part_off=0, **common)
        k = dev.kernel("adam", "step")
        for name, p in self.params.items():
            dev.run(k, ceil_div(p.size, WG), grad=grads[name], param=p, m=self.m[name], v=self.v[name],
                    n=p.size, part_off=0, **common)

    def state(self) -> dict:
        """name -> Tensor of the moments ("adam.m.NAME", "adam.v.NAME") and the step count."""
        out = {f"adam.m.{k}": t for k, t in self.m.items()}
        out.update({f"adam.v.{k}": t for k, t in self.v.items()})
        return out

    def load_state(self, tensors: dict, t: int):
        for k in self.params:
            for kind, dst in (("m", self.m), ("v", self.v)):
                src = tensors.get(f"adam.{kind}.{k}")
                expect("Adam.load_state", isinstance(src, Tensor) and src.size == dst[k].size,
                       f"saved state has no adam.{kind}.{k} of {dst[k].shape}")
                dst[k] = src
        self.t = int(t)


@check("adam")
async def _check_adam(dev):
    r = rng(44)
    p0, g = rand(r, 70), rand(r, 70, -3, 3)
    lr, b1, b2, eps, clip = 0.01, 0.9, 0.999, 1e-8, 1.0
    pt = dev.tensor(p0, (70,))
    opt = Adam({"w": pt}, lr, (b1, b2), eps, clip)
    opt.step({"w": dev.tensor(g, (70,))})
    opt.step({"w": dev.tensor(g, (70,))})
    norm = math.sqrt(sum(v * v for v in g))
    gc = [v * min(1.0, clip / (norm + 1e-6)) for v in g]
    want, m, v = list(p0), [0.0] * 70, [0.0] * 70
    for t in (1, 2):
        for i in range(70):
            m[i] = b1 * m[i] + (1 - b1) * gc[i]
            v[i] = b2 * v[i] + (1 - b2) * gc[i] ** 2
            want[i] -= lr / (1 - b1 ** t) * m[i] / (math.sqrt(v[i]) / math.sqrt(1 - b2 ** t) + eps)
    return assert_close("adam params", await pt.read(), want, rtol=1e-5, atol=1e-6)
