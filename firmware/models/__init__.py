"""Bundled models: the int8 digits classifier of ``make demo`` and its maker."""
