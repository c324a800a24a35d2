"""Placeholder: filled in by its building block."""

METHODS: dict = {}
