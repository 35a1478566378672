"""header_check: each public C++ header compiles on its own, and pulls in no
header from an internal/ directory nor the CPU SIMD header.

For every header in `headers` (paths from the workspace root), an action
compiles a translation unit holding only `#include "<header>"` with the
include paths and defines of `deps` (the cc_library targets that own the
headers), with -H listing every header opened; it fails if the compile fails
or a forbidden header is opened. Its output, `<name>.txt`, lists each header
and the project headers it opened, for the test that prints it.
"""

_FORBIDDEN = "(/internal/|kernels/cpu/simd\\.h)"

def _header_check_impl(ctx):
    toolchain = ctx.attr._cc_toolchain[cc_common.CcToolchainInfo]
    cc = [d[CcInfo].compilation_context for d in ctx.attr.deps]
    inputs = depset(transitive = [c.headers for c in cc] + [toolchain.all_files])
    flags = ["-std=c++17", "-fsyntax-only", "-H", "-Wall", "-Werror"]
    for c in cc:
        flags += ["-I" + p for p in c.includes.to_list()]
        flags += ["-iquote" + p for p in c.quote_includes.to_list()]
        flags += ["-isystem" + p for p in c.system_includes.to_list()]
        flags += ["-D" + d for d in c.defines.to_list()]
    out = ctx.actions.declare_file(ctx.attr.name + ".txt")
    script = ["set -euo pipefail", ": > {}".format(out.path)]
    for h in ctx.attr.headers:
        script.append("""
printf '#include "%s"\\n' '{h}' > "$tmp/tu.cc"
if ! {cxx} {flags} -iquote . "$tmp/tu.cc" 2> "$tmp/log"; then
  echo "{h} does not compile alone:" >&2; grep -v '^\\.' "$tmp/log" >&2; exit 1
fi
opened=$(sed -n 's/^\\.\\+ \\(\\.\\/\\)\\{{0,1\\}}//p' "$tmp/log" | grep -E '^(runtime|kernels|optimizer|models|include)/' | sort -u || true)
if echo "$opened" | grep -E '{forbidden}'; then
  echo "{h} leaks the header(s) above (internal/ or SIMD) into embedders" >&2; exit 1
fi
echo "{h}: $(echo $opened | wc -w) project headers: $(echo $opened)" >> {out}
""".format(cxx = toolchain.compiler_executable, h = h, flags = " ".join(flags), forbidden = _FORBIDDEN, out = out.path))
    ctx.actions.run_shell(
        inputs = inputs,
        outputs = [out],
        command = "tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"' EXIT\n" + "\n".join(script),
        mnemonic = "HeaderCheck",
        progress_message = "Compiling %d public headers alone" % len(ctx.attr.headers),
    )
    return [DefaultInfo(files = depset([out]), runfiles = ctx.runfiles(files = [out]))]

header_check = rule(
    implementation = _header_check_impl,
    attrs = {
        "deps": attr.label_list(providers = [CcInfo]),
        "headers": attr.string_list(mandatory = True),
        "_cc_toolchain": attr.label(default = "@bazel_tools//tools/cpp:current_cc_toolchain"),
    },
)
