"""vfio-flavourd's benchmark (issue 8): `bench/run` measures each figure
on simulated kernels under /dev/shm and writes bench/results.json."""
