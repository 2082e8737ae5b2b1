"""Backend passes: functions over the graph or the program, each callable alone
(``prune``, ``quantize``, ``fake_quantize``, ``partition``, ``place``).

``toolchain.passes.pipeline`` wraps them as pass objects with typed options
and a shared analysis context; a pipeline is a printable list of those, and
the report records which ran with which options.
"""
