"""The compiler: internal graph, passes, compiled program, reports, CLI."""
