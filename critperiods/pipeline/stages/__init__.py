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


def setup(snakemake: Any) -> torch.device:
    """Send stderr (tqdm, warnings, logging) to the rule's log, pin threads, pick the device.

    On a workstation with several GPUs, concurrent jobs each lock a different one;
    under SLURM the GPU in ``CUDA_VISIBLE_DEVICES`` is used.
    """
    if snakemake.log:
        sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115 - lives for the job
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("arviz").setLevel(logging.WARNING)  # its plotting-backend chatter
    torch.set_num_threads(max(1, int(snakemake.threads)))
    return acquire_device(snakemake.params.get("device", "cpu"))
