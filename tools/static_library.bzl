"""static_library: one self-contained archive of a C++ library and everything
it depends on in this workspace (Bazel 4.2 has no cc_static_library).

The position-independent objects of every dependency are linked into one
relocatable object (ld -r); every strong global symbol not starting with
`keep_prefix` is made local (objcopy), and the result is archived. The
archive then defines, strongly, only the interface (as the shared library's
version script exports only it); weak and GNU-unique definitions -- inline
C++ and templates, which a C++ program may instantiate too -- stay global so
the linker can merge them with the program's.
`<name>.linkopts` lists the system libraries the archive still needs (the
dependencies' linkopts), for a pkg-config file's Libs.private.
"""

def _static_library_impl(ctx):
    archives = []
    linkopts = []
    for dep in ctx.attr.deps:
        for li in dep[CcInfo].linking_context.linker_inputs.to_list():
            linkopts.extend(li.user_link_flags)
            for lib in li.libraries:
                a = lib.pic_static_library or lib.static_library
                if a != None and a not in archives:
                    archives.append(a)
    out = ctx.actions.declare_file(ctx.attr.name)
    flags = ctx.actions.declare_file(ctx.attr.name + ".linkopts")
    seen = {}
    unique = []
    for f in linkopts:
        if f not in seen:
            seen[f] = True
            unique.append(f)
    ctx.actions.write(flags, " ".join(unique) + "\n")
    ctx.actions.run_shell(
        inputs = archives,
        outputs = [out],
        command = """set -euo pipefail
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
ld -r -o "$tmp/all.o" --whole-archive {archives} --no-whole-archive
# Kept global: the interface, and the weak and GNU-unique definitions (inline
# functions, template instances, their statics), which the program may
# define too and the linker must be able to merge with ours.
nm --defined-only -g "$tmp/all.o" |
  awk '$2 ~ /^[WVu]$/ || $3 ~ /^{keep_re}/ {{print $3}}' > "$tmp/keep"
objcopy --keep-global-symbols="$tmp/keep" "$tmp/all.o"
rm -f {out}
ar rcsD {out} "$tmp/all.o"
""".format(
            archives = " ".join([a.path for a in archives]),
            keep_re = ctx.attr.keep_prefix,
            out = out.path,
        ),
        mnemonic = "StaticLibrary",
        progress_message = "Archiving %s" % out.short_path,
    )
    return [DefaultInfo(
        files = depset([out, flags]),
        runfiles = ctx.runfiles(files = [out, flags]),
    )]

static_library = rule(
    implementation = _static_library_impl,
    attrs = {
        "deps": attr.label_list(providers = [CcInfo]),
        "keep_prefix": attr.string(mandatory = True),
    },
)
