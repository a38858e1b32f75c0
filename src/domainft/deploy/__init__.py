"""Deployment checks: Kubernetes manifests (KubeRay CRDs, kustomize) validated without a cluster.

Renders kustomizations with `kubectl kustomize`; imports neither torch, transformers, Ray nor
DeepSpeed, and nothing above it (the CLI passes its parser in).
"""
from domainft.deploy.k8s import Finding, format_findings, validate_tree

__all__ = ["Finding", "format_findings", "validate_tree"]
