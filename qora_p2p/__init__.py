"""qora-p2p: serverless Byzantine-robust federated learning.

Equal peers train locally, exchange signed fixed-point updates, aggregate them with exact robust
rules, and agree on every round's result.
"""

__version__ = "0.1.0"
