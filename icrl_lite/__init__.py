"""icrl-lite: teach small language models to use tools with reinforcement learning on one GPU or a CPU."""

__version__ = "0.1.0"
