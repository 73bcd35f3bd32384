"""Versioned entities (prompts, model configs, routes, providers, datasets) with aliases and
history, experiment runs, and turning a ``shipyard.yaml`` into registry versions.

Public: ``versions.Registry`` (put, get, aliases, rollback, snapshots), ``prompts.Prompt`` and the
bounded template renderer, ``datasets``, ``runs``, ``validation`` (``validate``, ``parse_config``,
``load_config``: a file checked against everything it names), ``apply`` (``plan``, ``apply``,
``export``, ``runtime_config``).
"""
