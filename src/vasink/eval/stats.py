"""The harness's statistics live in :mod:`vasink.stats` (shared with the analysis and the organism); these
names stay importable from here for code written against ``vasink.eval.stats``."""

from ..stats import holm, mcnemar_exact, paired_bootstrap

__all__ = ["holm", "mcnemar_exact", "paired_bootstrap"]
