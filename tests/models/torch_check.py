"""Independent numerics: the same GPT, weights and batch in PyTorch (float64)
give the loss and the gradients Trireme computed (float32), within 1e-5
relative (normwise per tensor).

usage: torch_check.py DIR [TORCH_DEVICE]  (cpu by default; cuda on a GPU)"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

d = sys.argv[1]
dev = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cpu")
L, C, H, V, T, B, eps = open(os.path.join(d, "config.txt")).read().split()
L, C, H, V, T, B, eps = int(L), int(C), int(H), int(V), int(T), int(B), float(eps)
D = C // H


def load(name, shape):
    a = np.fromfile(os.path.join(d, name + ".bin"), dtype=np.float32).reshape(shape)
    return torch.tensor(a, dtype=torch.float64, device=dev, requires_grad=True)


P = {"wte": load("wte", (V, C)), "wpe": load("wpe", (T, C)),
     "lnf_g": load("lnf_g", (C,)), "lnf_b": load("lnf_b", (C,))}
shapes = {"ln1_g": (C,), "ln1_b": (C,), "qkv_w": (C, 3 * C), "qkv_b": (3 * C,),
          "proj_w": (C, C), "proj_b": (C,), "ln2_g": (C,), "ln2_b": (C,),
          "fc_w": (C, 4 * C), "fc_b": (4 * C,), "out_w": (4 * C, C), "out_b": (C,)}
for l in range(L):
    for k, s in shapes.items():
        P[f"h{l}.{k}"] = load(f"h{l}.{k}", s)

tok = np.fromfile(os.path.join(d, "tokens.bin"), dtype=np.int32).reshape(B, T + 1)
inp = torch.tensor(tok[:, :T], dtype=torch.long, device=dev)
tgt = torch.tensor(tok[:, 1:], dtype=torch.long, device=dev)

x = P["wte"][inp] + P["wpe"][None, :, :]
mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=dev), 1)
for l in range(L):
    p = lambda k: P[f"h{l}.{k}"]
    h = F.layer_norm(x, (C,), p("ln1_g"), p("ln1_b"), eps)
    qkv = h @ p("qkv_w") + p("qkv_b")
    q, k, v = qkv.split(C, dim=-1)
    q, k, v = [t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)]
    att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    att = att.masked_fill(mask, float("-inf")).softmax(-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    x = x + y @ p("proj_w") + p("proj_b")
    h = F.layer_norm(x, (C,), p("ln2_g"), p("ln2_b"), eps)
    h = F.gelu(h @ p("fc_w") + p("fc_b"), approximate="tanh")
    x = x + h @ p("out_w") + p("out_b")
x = F.layer_norm(x, (C,), P["lnf_g"], P["lnf_b"], eps)
logits = x @ P["wte"].t()  # the tied head
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
