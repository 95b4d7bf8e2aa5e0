"""Work beyond one machine: ``fleet`` ships kernlab to the hosts of ``hosts.yaml`` over SSH
and runs their share of a matrix (`invoke matrix --hosts`)."""
