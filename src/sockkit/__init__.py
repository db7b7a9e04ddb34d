"""sockkit: socket servers and clients, one service under every concurrency model."""

__version__ = "0.1.0"
