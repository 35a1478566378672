"""An independent reader of a Trireme checkpoint, in Python's standard library.

Parses every rank-*.safetensors file by the safetensors format's rules and the
manifest as plain JSON, reassembles each global tensor from its chunks (block
in a view, flat range inside the block) and writes it as raw f32, so a test can
compare it with the C++ reader bit for bit.

    python3 safetensors_interop.py CHECKPOINT_DIR STATE OUT_DIR
"""
import json
import os
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = data[8 + n:]
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", meta
        begin, end = meta["data_offsets"]
        count = 1
        for d in meta["shape"]:
            count *= d
        assert end - begin == 4 * count
        tensors[name] = list(struct.unpack("<%df" % count, body[begin:end]))
    return tensors


def global_index(view, offset, shape, i):
    idx = []
    for d in reversed(shape):
        idx.append(i % d)
        i //= d
    idx.reverse()
    g = 0
    for v, o, k in zip(view, offset, idx):
        g = g * v + o + k
    return g


def main():
    ckpt, state, out = sys.argv[1:4]
    with open(os.path.join(ckpt, "manifest.json")) as f:
        manifest = json.load(f)
    files = {name: read_safetensors(os.path.join(ckpt, name)) for name in manifest["files"]}
    for name, t in manifest["tensors"].items():
        numel = 1
        for d in t["shape"]:
            numel *= d
        full = [None] * numel
        for c in t["chunks"]:
            values = files[c["file"]][state + "/" + name]
            for k, i in enumerate(range(c["begin"], c["end"])):
                g = global_index(c["view"], c["block_offset"], c["block_shape"], i)
                assert full[g] is None, (name, g)
                full[g] = values[k]
        assert all(v is not None for v in full), name
        with open(os.path.join(out, name + ".f32"), "wb") as f:
            f.write(struct.pack("<%df" % numel, *full))
    print(len(manifest["tensors"]), "tensors reassembled from", len(files), "files")


if __name__ == "__main__":
    main()
