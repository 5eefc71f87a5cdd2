"""The reproducible benchmark: sampling and distillation against their limits (same as ``videocm bench``).

    python benchmarks/bench.py                         # shipped flow teacher and students, this machine
    python benchmarks/bench.py --family vp --out benchmarks/results/bench-vp-cpu.json
    python benchmarks/bench.py --repeats 5 --distillation false

Prints a sampling table and a distillation table and writes the JSON to ``--out``. See
``src/videocm/evaluation/bench.py`` for what each figure measures.
"""

from __future__ import annotations

import sys

from videocm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
