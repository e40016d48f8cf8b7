#!/usr/bin/env python3
"""What `make release` built for one architecture: each function's bootstrap, its size and its
zipped size (the archive SAM uploads: bootstrap alone, deflated), checked to be an ELF binary for
that architecture that asks no newer glibc than Lambda's provided.al2023 runtime has (2.34).

    release_sizes.py ARCH LAMBDA_DIR FUNCTION...     ARCH: arm64 or x86_64
"""

from __future__ import annotations

import io
import re
import sys
import zipfile
from pathlib import Path

MACHINES = {"arm64": 183, "x86_64": 62}  # ELF e_machine: EM_AARCH64, EM_X86_64
RUNTIME_GLIBC = (2, 34)  # provided.al2023


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[1] not in MACHINES:
        print(__doc__, file=sys.stderr)
        return 2
    arch, lambda_dir, functions = argv[1], Path(argv[2]), argv[3:]
    status = 0
    for function in functions:
        path = lambda_dir / function / "bootstrap"
        binary = path.read_bytes()
        machine = int.from_bytes(binary[18:20], "little")
        # The versions a binary needs are named in its dynamic string table.
        needed = sorted({tuple(map(int, v)) for v in re.findall(rb"GLIBC_(\d+)\.(\d+)", binary)})
        newest = needed[-1] if needed else (0, 0)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.write(path, "bootstrap")
        problems = []
        if binary[:4] != b"\x7fELF" or machine != MACHINES[arch]:
            problems.append(f"not an {arch} ELF binary (e_machine {machine})")
        if newest > RUNTIME_GLIBC:
            problems.append(f"needs GLIBC_{newest[0]}.{newest[1]}, provided.al2023 has 2.34")
        print(f"{arch:>6} {function:>8}: bootstrap {len(binary):>9,} bytes, zipped"
              f" {len(archive.getvalue()):>9,} bytes, needs GLIBC_{newest[0]}.{newest[1]}"
              + "".join(f"; ERROR: {p}" for p in problems))
        status |= bool(problems)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
