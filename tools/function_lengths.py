#!/usr/bin/env python3
"""The longest function bodies in the C++/CUDA sources under the given
directories (lines from the signature to the closing brace), for keeping
functions short. Lambdas count within their function.
Usage: tools/function_lengths.py [--top N] DIR..."""
import re
import subprocess
import sys


def strip(text):
    # Comments and string/char literals out, newlines kept.
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"' or c == "'":
            if c == '"' and i > 0 and text[i - 1] == "R":  # raw string: R"(...)"
                j = text.find(')"', i)
                j = n if j < 0 else j + 2
            else:
                j = i + 1
                while j < n and text[j] != c:
                    j += 2 if text[j] == "\\" else 1
                j += 1
            out.append(" " + "\n" * text.count("\n", i, j))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(path):
    text = strip(open(path, encoding="utf-8", errors="replace").read())
    stack = []  # (kind, start_line, name)
    found = []
    last = 0  # where the current statement began
    line = 1
    for i, c in enumerate(text):
        if c == "\n":
            line += 1
        elif c in ";":
            last = i + 1
        elif c == "{":
            head = text[last:i]
            head_line = line - head.count("\n") + (len(head) - len(head.lstrip()) and 0)
            words = head.strip()
            parent = stack[-1][0] if stack else "ns"
            if re.search(r"\bnamespace\b", words) or words.startswith('extern'):
                kind = "ns"
            elif re.match(r"^(template\s*<.*>\s*)?(class|struct|union|enum)\b", words) and "(" not in words:
                kind = "type"
            elif parent in ("ns", "type") and ")" in words and not words.endswith("="):
                kind = "fn"
            else:
                kind = "block"
            start = line - words.count("\n") if words else line
            first = words.split("\n")[0] if words else ""
            stack.append((kind, start, re.sub(r"\s+", " ", words)[:90]))
            last = i + 1
        elif c == "}":
            if stack:
                kind, start, name = stack.pop()
                if kind == "fn":
                    found.append((line - start + 1, path, start, name))
            last = i + 1
    return found


def main():
    args = sys.argv[1:]
    top = 10
    if args[:1] == ["--top"]:
        top, args = int(args[1]), args[2:]
    files = subprocess.check_output(
        ["git", "ls-files"] + [f"{d}/*{e}" for d in args for e in (".cc", ".cu", ".h", ".cuh")]
    ).decode().split()
    found = []
    for f in files:
        found += functions(f)
    found.sort(reverse=True)
    for n, path, line, name in found[:top]:
        print(f"{n:5d}  {path}:{line}  {name}")


main()
