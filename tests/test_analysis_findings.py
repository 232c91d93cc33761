"""FINDINGS.md's verdicts (vasink.analysis.findings) on hand-made numbers."""

from __future__ import annotations

from vasink.analysis.findings import sink_findings


def sinks_numbers(bos_phi):
    layers = [{"layer": layer, "bos_phi": phi, "median_phi": 6.0, "visual_sink_cells": [],
               "attention": {"per_visual_sink": None, "per_visual_nonsink": 0.01}}
              for layer, phi in enumerate([5.0, 5.0, *bos_phi])]
    return {"layers": layers, "config": {"tau": 17.46, "sink_dims": [507]}, "image_tokens": 64}


def test_a_massive_activation_with_two_exceptions_is_said_to_hold_where_it_holds():
    bos = [23.8] * 8 + [6.2, 3.8] + [23.8] * 18  # the SmolLM2 organism: layers 10 and 11 are the exceptions
    verdict = sink_findings(sinks_numbers(bos))[0].split(" — ")[0]
    assert verdict.endswith("**holds in 26 of 28 searched layers** (not in layers 10, 11)"), verdict
    assert "**holds**" in sink_findings(sinks_numbers([23.8] * 28))[0]
    assert "**does not hold**" in sink_findings(sinks_numbers([23.8] * 10 + [3.0] * 18))[0]
