"""Simulated raters: scripted tastes (oracles) that judge pairs through the same store path as a person, and the
measure of how far steering moved a model toward one (`rlft.sim.measure`: win rate, ceiling, headroom captured)."""
