"""Load generator against OpenAI-compatible servers: see domino_sglang/bench/load.py
(also installed as the console script `domino-load`)."""

import sys

from domino_sglang.bench.load import main

if __name__ == "__main__":
    sys.exit(main())
