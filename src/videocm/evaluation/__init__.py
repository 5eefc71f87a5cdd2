"""Evaluation: the MovingDigits judge, metrics, cost, generators and the report."""
