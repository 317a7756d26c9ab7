"""Simulated controllers: they make a lab cluster's objects behave like a real cluster's."""
