"""mmsr_lib: the library behind the MMSR study workbook (ID-agnostic multi-modal SR)."""

from mmsr_lib.config import PROFILES, RunConfig, default_profile, profile_config

__all__ = ["PROFILES", "RunConfig", "default_profile", "profile_config"]
__version__ = "0.1.0"
