"""FluxChat: a peer-to-peer, end-to-end encrypted mail node."""

__version__ = "0.1.0"
