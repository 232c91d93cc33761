"""The paper's ablations (Sec. 3.3, Tables 4-5) as weight rules on vasink's intervention seam.

    rule = mask_visual_sinks()
    with vasink.var(model, config, intervention=rule):
        model.generate(**inputs)

A rule ``(weights (B, H, Q, K) float32, plan, config, layer) -> weights`` runs on the reference path in
the layers VAR considers (``config.modified_layers``) and, by default, only where the prompt has a visual
sink in that layer. Every condition, the base included, runs on that same path, so answers are paired.

Masking (a, b) acts on every head, on the eligible query rows (text after the image, and every generated
token): the masked keys' weights are set to 0 and each row is **renormalized** to sum to 1 (the rest of
the row keeps its proportions). A row whose every allowed key is masked is left unchanged.

(a) ``mask-visual-sinks``: the visual sink tokens of the layer are masked.
(b) ``mask-random-visual``: as many visual tokens as the layer has visual sinks, drawn from its non-sink
    visual tokens in a random order fixed per image and seed (the same order in every layer, so the sets of
    two layers are nested, and identical where the sink counts agree).
(c) ``var-all-heads``: VAR without the head test (rho = 0, min_visual_attention = 0).
(d) the budget Omega = p * (sink mass) of the rows the head test selects goes to the non-sink visual
    tokens (``budget-visual``: VAR itself), the non-sink text tokens (``budget-text``) or both
    (``budget-all``), in proportion to their current weights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..attention import var_rule
from ..config import VARConfig
from ..stats import paired_bootstrap
from ..redistribute import redistribute

TINY = torch.finfo(torch.float32).tiny


def mask_attention(weights: torch.Tensor, keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Zero ``keys`` (B, K) in the rows ``queries`` (B, Q) of ``weights`` (B, H, Q, K), rows renormalized."""
    drop = keys[:, None, None, :] & queries[:, None, :, None]
    kept = torch.where(drop, 0.0, weights)
    total = kept.sum(-1, keepdim=True)
    changed = (drop & (weights != 0)).any(-1, keepdim=True) & (total > 0)  # rows with masked weight left to share
    return torch.where(changed, kept / total.clamp_min(TINY), weights)


def identity():
    """The base: the reference path with the weights unchanged."""
    def rule(weights, plan, config, layer):
        return weights
    return rule


def mask_visual_sinks():
    """(a) Text-to-visual-sink attention masked on the eligible rows."""
    def rule(weights, plan, config, layer):
        return mask_attention(weights, plan.visual_keys & plan.sink_keys, plan.eligible_queries)
    return rule


def image_seed(seed: int, image_key: str) -> int:
    """A generator seed fixed per (seed, image): the same random order in every layer and every call."""
    digest = hashlib.sha256(f"{seed}:{image_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def random_visual_keys(plan_visual: torch.Tensor, plan_sinks: torch.Tensor, orders: list[torch.Tensor]) -> torch.Tensor:
    """Per row b: the first |visual sinks| non-sink visual keys in the fixed order ``orders[b]`` (B, K) bool.

    ``orders[b]`` permutes the ordinals 0..|V_b|-1 of row b's visual tokens (in position order).
    """
    chosen = torch.zeros_like(plan_visual)
    for row, order in enumerate(orders):
        positions = plan_visual[row].nonzero().flatten()  # (V,)
        if len(order) != len(positions):
            raise ValueError(f"random order covers {len(order)} visual tokens, the prompt has {len(positions)}")
        shuffled = positions[order.to(positions.device)]
        count = int((plan_visual[row] & plan_sinks[row]).sum())
        candidates = shuffled[~plan_sinks[row][shuffled]]
        chosen[row, candidates[:count]] = True
    return chosen


def mask_random_visual(seed: int, image_keys: list[str]):
    """(b) As many random non-sink visual tokens as visual sinks, masked; one fixed order per image."""
    orders: dict[int, list[torch.Tensor]] = {}

    def rule(weights, plan, config, layer):
        counts = plan.visual_keys.sum(-1).tolist()
        key = tuple(counts)
        if key not in orders:
            if len(counts) != len(image_keys):
                raise ValueError(f"{len(image_keys)} image keys for a batch of {len(counts)}")
            orders[key] = [torch.randperm(n, generator=torch.Generator().manual_seed(image_seed(seed, k)))
                           for n, k in zip(counts, image_keys)]
        masked = random_visual_keys(plan.visual_keys, plan.sink_keys, orders[key])
        return mask_attention(weights, masked, plan.eligible_queries)
    return rule


RECEIVERS = ("visual", "text", "all")


def redistribute_budget(weights: torch.Tensor, plan, config: VARConfig, receivers: str) -> torch.Tensor:
    """VAR's head test and budget, with the budget given to ``receivers`` ("visual" = VAR, "text", "all")."""
    if receivers not in RECEIVERS:
        raise ValueError(f"receivers={receivers!r}; choose one of {RECEIVERS}")
    visual, sink = plan.visual_keys, plan.sink_keys  # (B, K)
    receiving = {"visual": visual & ~sink, "text": ~visual & ~sink, "all": ~sink}[receivers]
    return redistribute(weights, visual, sink, plan.eligible_queries, rho=config.rho, p=config.p,
                        min_visual_attention=config.min_visual_attention, compat=config.compat,
                        skip_without_visual_sink=config.skip_layers_without_visual_sink, receivers=receiving)


def budget_to(receivers: str):
    def rule(weights, plan, config, layer):
        return redistribute_budget(weights, plan, config, receivers)
    return rule


def var_all_heads():
    """(c) VAR on every head and row: no head test."""
    def rule(weights, plan, config, layer):
        return var_rule(weights, plan, config.replace(rho=0.0, min_visual_attention=0.0), layer)
    return rule


@dataclass(frozen=True)
class Ablation:
    """A condition of the ablation table: ``make(seed, image_keys) -> rule``."""

    name: str
    description: str
    make: Callable[[int, list[str]], Callable]
    seeded: bool = False


ABLATIONS: dict[str, Ablation] = {}


def register_ablation(ablation: Ablation) -> Ablation:
    ABLATIONS[ablation.name] = ablation
    return ablation


BASE = register_ablation(Ablation("base", "no change (same reference path)", lambda seed, keys: identity()))
register_ablation(Ablation("mask-visual-sinks", "(a) text-to-visual-sink attention masked, rows renormalized",
                           lambda seed, keys: mask_visual_sinks()))
register_ablation(Ablation("mask-random-visual", "(b) as many random non-sink visual tokens masked",
                           lambda seed, keys: mask_random_visual(seed, keys), seeded=True))
register_ablation(Ablation("var-all-heads", "(c) VAR without the head test (rho 0, min m_V 0)",
                           lambda seed, keys: var_all_heads()))
register_ablation(Ablation("budget-text", "(d) budget to non-sink text tokens only",
                           lambda seed, keys: budget_to("text")))
register_ablation(Ablation("budget-visual", "(d) budget to non-sink visual tokens only (= VAR)",
                           lambda seed, keys: budget_to("visual")))
register_ablation(Ablation("budget-all", "(d) budget to all non-sink tokens",
                           lambda seed, keys: budget_to("all")))

DEFAULT_ABLATIONS = tuple(name for name in ABLATIONS if name != "base")


def paired_difference(condition: np.ndarray, base: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of ``condition - base`` over samples (0/1 or per-sample means) with a 95% paired bootstrap CI."""
    condition, base = np.asarray(condition, float), np.asarray(base, float)
    if condition.shape != base.shape or condition.ndim != 1 or len(base) == 0:
        raise ValueError("paired_difference needs two equal-length, non-empty 1-d arrays")
    diff = condition - base
    low, high = paired_bootstrap(lambda s: {"mean": s["v"].mean(-1)}, {"v": base}, {"v": condition},
                                 resamples=resamples, seed=seed)["mean"]
    return {"accuracy": float(condition.mean()), "base_accuracy": float(base.mean()), "delta": float(diff.mean()),
            "ci95": [float(low), float(high)], "changed": int((condition != base).sum()), "n": int(len(diff))}
