"""Shared set-up for the stage scripts: logging to the job log, threads, device."""

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
