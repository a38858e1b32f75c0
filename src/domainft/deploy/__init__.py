"""Deployment checks: Kubernetes manifests (KubeRay CRDs, kustomize) validated without a cluster.

Imports neither Ray nor DeepSpeed.
"""
from domainft.deploy.k8s import Finding, format_findings, validate_tree

__all__ = ["Finding", "format_findings", "validate_tree"]
