"""Independent numerics: the same decoder, weights and batch in PyTorch
(float64) give the loss and the gradients Trireme computed (float32), within
1e-5 relative (normwise per tensor).

The architecture follows config.txt (written by export_for_torch): GPT-2, or
any of Llama's choices, each written here from its paper's definition:
RMSNorm (Zhang & Sennrich 2019), rotary positions (Su et al. 2021: adjacent
pairs, theta_i = base^(-2i/d)), SwiGLU (Shazeer 2020), grouped-query
attention (Ainslie et al. 2023: query head h reads key/value head
h // (heads / kv_heads)), sliding-window attention (Beltagy et al. 2020).

usage: torch_check.py DIR [TORCH_DEVICE]  (cpu by default; cuda on a GPU)"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

d = sys.argv[1]
dev = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cpu")
cfg = dict(line.split() for line in open(os.path.join(d, "config.txt")) if line.strip())
L, C, H, KV = int(cfg["layers"]), int(cfg["hidden"]), int(cfg["heads"]), int(cfg["kv_heads"])
V, T, B, FF = int(cfg["vocab"]), int(cfg["seq"]), int(cfg["batch"]), int(cfg["ffn"])
eps, base, window = float(cfg["eps"]), float(cfg["rope_base"]), int(cfg["window"])
rms, rope, swiglu = cfg["norm"] == "rmsnorm", cfg["position"] == "rope", cfg["mlp"] == "swiglu"
tied, bias = cfg["tied"] == "1", cfg["bias"] == "1"
D = C // H
print(f"config: {' '.join(f'{k}={v}' for k, v in cfg.items())}")


def load(name, shape):
    a = np.fromfile(os.path.join(d, name + ".bin"), dtype=np.float32).reshape(shape)
    return torch.tensor(a, dtype=torch.float64, device=dev, requires_grad=True)


# The parameters this architecture has, with their shapes.
top = {"wte": (V, C), "lnf_g": (C,)}
if not rope:
    top["wpe"] = (T, C)
if not rms:
    top["lnf_b"] = (C,)
if not tied:
    top["lm_head"] = (V, C)
block = {"ln1_g": (C,), "ln2_g": (C,), "proj_w": (C, C), "fc_w": (C, FF), "out_w": (FF, C)}
if not rms:
    block.update(ln1_b=(C,), ln2_b=(C,))
if KV == H:
    block["qkv_w"] = (C, 3 * C)
else:
    block.update(q_w=(C, C), kv_w=(C, 2 * KV * D))
if swiglu:
    block["gate_w"] = (C, FF)
if bias:
    block.update(proj_b=(C,), fc_b=(FF,), out_b=(C,))
    block.update({"qkv_b": (3 * C,)} if KV == H else {"q_b": (C,), "kv_b": (2 * KV * D,)})
    if swiglu:
        block["gate_b"] = (FF,)
P = {k: load(k, s) for k, s in top.items()}
for l in range(L):
    for k, s in block.items():
        P[f"h{l}.{k}"] = load(f"h{l}.{k}", s)


def norm(x, g, b):
    if rms:  # x / sqrt(mean(x^2) + eps) * g
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g
    return F.layer_norm(x, (C,), g, b, eps)


def linear(x, p, w, b):
    return x @ p(w) + (p(b) if bias else 0)


def rotate(x):  # x: [B, heads, T, D]; pairs (2i, 2i+1) of position t by t * theta_i
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64, device=dev) / D)
    ang = torch.arange(T, dtype=torch.float64, device=dev)[:, None] * theta[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


tok = np.fromfile(os.path.join(d, "tokens.bin"), dtype=np.int32).reshape(B, T + 1)
inp = torch.tensor(tok[:, :T], dtype=torch.long, device=dev)
tgt = torch.tensor(tok[:, 1:], dtype=torch.long, device=dev)

i = torch.arange(T, device=dev)
allowed = i[None, :] <= i[:, None]  # causal: key j <= query t
if window > 0:
    allowed &= i[None, :] > i[:, None] - window  # and j > t - window
x = P["wte"][inp] + (0 if rope else P["wpe"][None, :, :])
for l in range(L):
    p = lambda k: P[f"h{l}.{k}"]
    h = norm(x, p("ln1_g"), None if rms else p("ln1_b"))
    if KV == H:
        q, k, v = linear(h, p, "qkv_w", "qkv_b").split(C, dim=-1)
    else:
        q = linear(h, p, "q_w", "q_b")
        k, v = linear(h, p, "kv_w", "kv_b").split(KV * D, dim=-1)
    q = q.view(B, T, H, D).transpose(1, 2)
    k, v = [t.view(B, T, KV, D).transpose(1, 2) for t in (k, v)]
    if rope:
        q, k = rotate(q), rotate(k)
    k, v = [t.repeat_interleave(H // KV, dim=1) for t in (k, v)]  # head h -> kv head h // group
    att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    x = x + linear(y, p, "proj_w", "proj_b")
    h = norm(x, p("ln2_g"), None if rms else p("ln2_b"))
    if swiglu:
        h = F.silu(linear(h, p, "gate_w", "gate_b")) * linear(h, p, "fc_w", "fc_b")
    else:
        h = F.gelu(linear(h, p, "fc_w", "fc_b"), approximate="tanh")
    x = x + linear(h, p, "out_w", "out_b")
x = norm(x, P["lnf_g"], None if rms else P["lnf_b"])
logits = x @ (P["wte"] if tied else P["lm_head"]).t()
loss = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
loss.backward()

ours = float(open(os.path.join(d, "loss.txt")).read())
failed = 0
rel = abs(ours - loss.item()) / abs(loss.item())
print(f"loss: trireme {ours:.9f}  torch {loss.item():.9f}  relative {rel:.2e}")
failed += rel > 1e-5
for name, t in P.items():
    g = np.fromfile(os.path.join(d, name + ".grad.bin"), dtype=np.float32).reshape(t.shape)
    ref = t.grad.cpu().numpy()
    err = np.linalg.norm(g - ref) / max(np.linalg.norm(ref), 1e-30)
    bad = err > 1e-5
    failed += bad
    print(f"{'FAIL' if bad else 'ok  '} grad {name:10s} relative {err:.2e}")
print(f"{1 if not failed else 0} passed, {1 if failed else 0} failed")
sys.exit(1 if failed else 0)
