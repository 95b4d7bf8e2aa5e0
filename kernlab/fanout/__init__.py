"""Work beyond one machine: ``slurm`` runs a matrix as one Slurm job array, one task per
kernel (`invoke matrix --slurm`); ``fleet`` ships kernlab to the hosts of ``hosts.yaml`` over
SSH and runs their share of a matrix (`invoke matrix --hosts`)."""
