"""The application: the compile flow, evaluation, comparison, sweeps, reports and the command line, over frontends, toolchain and targets. Nothing imports it."""
