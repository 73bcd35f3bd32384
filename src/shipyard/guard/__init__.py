"""Guardrails: scanners on a route's input and output, and the pipeline that runs them.

Public: ``pipeline.GuardPipeline`` (``check_input``, ``check_output``, and the stage API the
streaming guard uses: ``scan``, ``open_span``, ``close_span``, ``blocked_output``), ``stream``
(the hold-back window for streamed answers), ``base`` (``Scanner``, ``Finding``, ``ScanContext``:
the plugin protocol), ``scanners`` and ``pii``/``injection`` (the built-ins), ``normalize`` (the
one text normaliser with its offset map). Red-teaming, which attacks a route through the
gateway, is :mod:`shipyard.redteam`, above this package.
"""
