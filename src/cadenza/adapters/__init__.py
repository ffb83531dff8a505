"""Backend adapters of the ports, one sub-package per backend, chosen by URL."""
