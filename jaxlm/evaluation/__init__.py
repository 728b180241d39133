"""Evaluation of pretrained models: frozen-feature k-shot probes (`probe`), zero-shot minimal
pairs (`pairs`) and bootstrap statistics (`stats`)."""
