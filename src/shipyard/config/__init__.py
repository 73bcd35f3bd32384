"""``shipyard.yaml``: its schema and reading it. A leaf: imports nothing of Shipyard but errors and
small helpers, so checking a file's shape loads no store, no model and no numpy.

Public: ``schema`` (the pydantic models: ``ShipyardConfig`` and its parts, the one name rule
``check_name``/``Name``), ``loader`` (``read_document`` with line numbers, ``substitute_env``,
``find_config``, ``settings_section``, ``validation_problems``, ``LoadedConfig``). Checking a file
against what it names (provider options, prompts, guards) is ``registry.validation``; applying it
to the registry is ``registry.apply``.
"""
