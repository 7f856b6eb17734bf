"""The applications: the `fheads` command line and the demo."""
