"""One module per workflow stage: the adapter between a rule and the library.

Every stage is four short hops (docs/architecture.md): a rule in ``workflow/rules/`` (paths,
params, resources) → a three-line script in ``scripts/`` that calls the stage module's
``run(snakemake)`` → that module's stage function, which takes typed settings and paths and
writes its outputs → the library that computes. All reading of params, checkpoint and
prepared-data loading, config hashing and model construction happens here, so the library
modules stay pure. Each stage is its own module, so that a stage's code fingerprint
(``critperiods.pipeline.fingerprint``) holds only the code it runs.

This package's ``setup`` is shared by all of them: logging to the job log, threads, device.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch

from critperiods.pipeline.devices import acquire_device


def setup(snakemake: Any, threads: int | None = None) -> torch.device:
    """Send stderr (tqdm, warnings, logging) to the rule's log, pin threads, pick the device.

    ``threads``: the torch threads the config asks for (``train.threads``), used even where
    Snakemake scaled the job's threads down to ``--cores``, with a warning: a CPU
    reduction's bits depend on its thread count, so ``--cores`` must not change a result.
    Without it, the job's threads. On a workstation with several GPUs, concurrent jobs each
    lock a different one; under SLURM the GPU in ``CUDA_VISIBLE_DEVICES`` is used.
    """
    if snakemake.log:
        sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115 - lives for the job
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("arviz").setLevel(logging.WARNING)  # its plotting-backend chatter
    given = max(1, int(snakemake.threads))
    wanted = given if threads is None else max(1, int(threads))
    if wanted > given:
        logging.getLogger(__name__).warning(
            "train.threads is %d, but Snakemake gave this job %d core(s) (--cores): it runs "
            "%d threads anyway, since the results' bits depend on the thread count", wanted,
            given, wanted)
    torch.set_num_threads(wanted)
    return acquire_device(snakemake.params.get("device", "cpu"))
