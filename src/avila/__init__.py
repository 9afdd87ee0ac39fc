"""Avila Analytics: self-hostable behavioural analytics and Industry 4.0 platform."""

__version__ = "0.1.0"
__all__ = ["__version__"]
