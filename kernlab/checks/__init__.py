"""pytest-testinfra checks run against a lab VM by `invoke vm.verify`."""
