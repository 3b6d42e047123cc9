"""Pixforge: one backend for credit-metered AI image apps."""
