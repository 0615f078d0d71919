"""W&B run start without W&B Launch's job inputs when no job input was staged.

Every `wandb.init` ends with `Run._detect_and_apply_job_inputs`, which imports
`wandb.sdk.launch.inputs.internal` to apply the inputs that W&B Launch's
`wandb.sdk.launch.manage_config_file` / `manage_wandb_config` staged in this process. That import
pulls in W&B Launch and W&B's public GraphQL API: 0.3-0.65 s, the largest part of a process's
first W&B run start on a 2-core CPU (BENCHMARKS.md, study throughput), for runs that stage none.

The staged inputs live in that module's `StagedLaunchInputs` singleton, so while the module has
not been imported nothing can have been staged and there is nothing to apply: the check is
skipped then, and runs as W&B's own otherwise.
"""

from __future__ import annotations

import functools
import logging
import sys

log = logging.getLogger(__name__)

STAGING_MODULE = "wandb.sdk.launch.inputs.internal"


def skip_launch_inputs_none_staged() -> None:
    """Wrap `wandb.Run._detect_and_apply_job_inputs` (once per process) so that it returns at
    once while `STAGING_MODULE` is not imported; leave it as it is, with a debug message, where
    this wandb has no such method."""
    from wandb.sdk import wandb_run

    from trainlab.utils.library_patches import enabled

    if not enabled("wandb_launch_inputs"):
        return
    apply = getattr(wandb_run.Run, "_detect_and_apply_job_inputs", None)
    if apply is None:
        log.debug("This wandb has no Run._detect_and_apply_job_inputs: its run start is left as it is.")
        return
    if getattr(apply, "skips_when_none_staged", False):
        return

    @functools.wraps(apply)
    def _detect_and_apply_job_inputs(self) -> None:
        if STAGING_MODULE in sys.modules:
            apply(self)

    _detect_and_apply_job_inputs.skips_when_none_staged = True
    wandb_run.Run._detect_and_apply_job_inputs = _detect_and_apply_job_inputs
