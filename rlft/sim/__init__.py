"""Simulated raters: scripted tastes (oracles) that judge pairs through the same store path as a person."""
