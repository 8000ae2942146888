"""Sweep orchestration: the only package that knows both training and fitting."""
