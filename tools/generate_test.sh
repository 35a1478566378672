#!/usr/bin/env bash
# //:generate from a //:train checkpoint of the Llama architecture (saved on
# dp 2 x tp 2 x pp 2): greedy text is the same on TP groups of 1, 2 and 4
# threads and of 2 mpirun processes; each rank holds its share of the
# key/value cache (a ring of the window); bad input is named.
set -euo pipefail
train="$(realpath "$1")"
generate="$(realpath "$2")"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/generate"
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp"
"$train" --backend=threads --preset=llama,tiny --sliding_window=8 --steps=30 --eval_every=0 \
  --checkpoint_dir=ck > train.log 2>&1 || { cat train.log; exit 1; }
args=(--checkpoint=ck --temperature=0 --prompt="ab" --prompt="hello" --max_new_tokens=20)
texts() { grep -E '^\[[0-9]+\] ' "$1"; }
"$generate" --backend=threads --tp=1 "${args[@]}" > tp1.log
for tp in 2 4; do
  "$generate" --backend=threads --tp=$tp "${args[@]}" > tp$tp.log
  diff <(texts tp1.log) <(texts tp$tp.log) || { echo "FAIL: tp $tp differs from tp 1"; exit 1; }
done
mpirun --allow-run-as-root -np 2 --oversubscribe --bind-to none --mca btl self,vader \
  "$generate" --backend=mpi "${args[@]}" > mpi.log 2>&1 || { cat mpi.log; exit 1; }
diff <(texts tp1.log) <(texts mpi.log) || { echo "FAIL: mpirun -np 2 differs from tp 1"; exit 1; }
[ "$(texts tp1.log | wc -l)" = 2 ] || { cat tp1.log; echo "FAIL: expected 2 texts"; exit 1; }
cat tp2.log
# The llama preset has 2 KV heads: one per rank at tp 2, shared at tp 4.
grep -q "rank 1: .*key/value cache .* (1 of 2 KV heads; a ring of 8 positions)" tp2.log
grep -q "rank 3: .*(1 of 2 KV heads; a ring of 8 positions)" tp4.log
grep -qE "decode: [0-9]+ tokens in .* tokens/s" tp1.log
# Bad input: named, exit 1, no hang.
if "$generate" --backend=threads --tp=3 "${args[@]}" > bad.log 2>&1; then exit 1; fi
grep -q "tp (3) must divide heads (4)" bad.log || { cat bad.log; exit 1; }
if mpirun --allow-run-as-root -np 2 --oversubscribe --bind-to none --mca btl self,vader \
  "$generate" --backend=mpi --tp=4 "${args[@]}" > bad.log 2>&1; then exit 1; fi
grep -q -- "--tp=4 but mpirun started 2 processes" bad.log || { cat bad.log; exit 1; }
if "$generate" --checkpoint=nowhere > bad.log 2>&1; then exit 1; fi
grep -q "nowhere" bad.log || { cat bad.log; exit 1; }
echo "PASS: the same text at tp 1, 2, 4 (threads) and mpirun -np 2"
