"""The command line (``shipyard …``): one Typer module per command group, assembled in ``main``.

Public: the ``shipyard`` entry point (``main.main``). Everything else is presentation over the
layers below: commands call the registry, the store's query modules and the server, never SQL of
their own. ``common`` holds what every command shares (settings resolution, the store guard,
``CliTable`` for tables that stay readable at 80 columns, ``print_json``).
"""
