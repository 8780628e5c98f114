"""`python -m maxcli.distributed.worker`: one spawned tensor-parallel rank. Its arguments (config, rank,
size, store port) arrive pickled on stdin from rank 0 (maxcli.distributed.launch.start_tensor_parallel)."""

import logging
import pickle
import sys

from maxcli.distributed.launch import worker_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, rank, size, port = pickle.loads(sys.stdin.buffer.read())
    worker_main(config, rank, size, port)
