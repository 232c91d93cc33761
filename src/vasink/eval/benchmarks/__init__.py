"""The built-in benchmarks; importing this package registers them."""

from . import (chair, cvbench, gqa, judged, mmbench, mme, mmvp, organism, pope, scienceqa, seed, textvqa,  # noqa: F401
               vizwiz, vqav2)
