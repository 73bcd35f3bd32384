"""Deployment manifests rendered from a user's own ``shipyard.yaml`` (``shipyard deploy kubernetes``).

Pure functions over an already checked config: nothing here reads the environment, opens a store or
starts a model, so what is rendered depends only on the file and the options given, and secrets
never reach the output (settings that carry them, and every ``${ENV}`` reference, are read from a
Kubernetes Secret by name).

Public: :class:`KubeOptions` (what the command's flags set), :func:`render_kubernetes` (the
objects, the Secret's keys and the script that creates it), :class:`Rendered`, :func:`to_yaml` and
:func:`write_directory` (a kustomize base: one file per object and a ``kustomization.yaml``).
"""

from shipyard.deploy.kubernetes import (
    CONFIG_PATH,
    HOME_PATH,
    KubeOptions,
    Rendered,
    SecretKey,
    render_kubernetes,
    to_yaml,
    write_directory,
)

__all__ = [
    "CONFIG_PATH",
    "HOME_PATH",
    "KubeOptions",
    "Rendered",
    "SecretKey",
    "render_kubernetes",
    "to_yaml",
    "write_directory",
]
