"""Evaluation: the MovingDigits judge, metrics, cost, clip sources and the report."""
