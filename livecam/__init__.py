"""livecam: a real-time virtual headshot camera."""

__version__ = "0.1.0"
