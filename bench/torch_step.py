"""The same GPT step in PyTorch (float32) for bench:step: prints tokens/s.

usage: torch_step.py LAYERS HIDDEN HEADS VOCAB SEQ BATCH STEPS THREADS [DEVICE]
(DEVICE: cpu, the default, or cuda)
"""
import math
import sys
import time

import torch
import torch.nn.functional as F

L, C, H, V, T, B, steps, threads = (int(a) for a in sys.argv[1:9])
dev = torch.device(sys.argv[9] if len(sys.argv) > 9 else "cpu")
torch.set_num_threads(threads)
if dev.type == "cuda":
    torch.set_default_device(dev)  # PyTorch 2.0 or later (the GPU machine's)
torch.manual_seed(0)
D = C // H


def param(*shape, zero=False, one=False):
    t = torch.ones(shape) if one else torch.zeros(shape) if zero else torch.randn(shape) * 0.02
    return t.requires_grad_()


wte, wpe = param(V, C), param(T, C)
blocks = [dict(ln1_g=param(C, one=True), ln1_b=param(C, zero=True), qkv_w=param(C, 3 * C),
               qkv_b=param(3 * C, zero=True), proj_w=param(C, C), proj_b=param(C, zero=True),
               ln2_g=param(C, one=True), ln2_b=param(C, zero=True), fc_w=param(C, 4 * C),
               fc_b=param(4 * C, zero=True), out_w=param(4 * C, C), out_b=param(C, zero=True))
          for _ in range(L)]
lnf_g, lnf_b = param(C, one=True), param(C, zero=True)
params = [wte, wpe, lnf_g, lnf_b] + [p for b in blocks for p in b.values()]
opt = torch.optim.AdamW(params, lr=1e-3)
mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)


def step():
    tok = torch.randint(0, V, (B, T + 1))
    x = wte[tok[:, :T]] + wpe[None]
    for p in blocks:
        h = F.layer_norm(x, (C,), p["ln1_g"], p["ln1_b"])
        q, k, v = (h @ p["qkv_w"] + p["qkv_b"]).split(C, -1)
        q, k, v = [t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)]
        a = ((q @ k.transpose(-1, -2)) / math.sqrt(D)).masked_fill(mask, float("-inf"))
        y = (a.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p["proj_w"] + p["proj_b"]
        h = F.layer_norm(x, (C,), p["ln2_g"], p["ln2_b"])
        x = x + F.gelu(h @ p["fc_w"] + p["fc_b"], approximate="tanh") @ p["out_w"] + p["out_b"]
    x = F.layer_norm(x, (C,), lnf_g, lnf_b)
    loss = F.cross_entropy((x @ wte.t()).reshape(-1, V), tok[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


step()  # warm-up
sync()
t0 = time.perf_counter()
for _ in range(steps):
    step()
sync()
dt = (time.perf_counter() - t0) / steps
print(f"{B * T / dt:.1f}")
