"""mmsr_lib: the library behind the MMSR study workbook (ID-agnostic multi-modal SR)."""

import os

# Idle OpenMP threads sleep instead of spinning, so two jobs on one machine do not starve each
# other (see mmsr_lib.util.threads). Read once, when torch loads OpenMP: set it before that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mmsr_lib.config import PROFILES, RunConfig, default_profile, profile_config  # noqa: E402

__all__ = ["PROFILES", "RunConfig", "default_profile", "profile_config"]
__version__ = "0.1.0"
