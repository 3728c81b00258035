"""The base of every typed section of settings: an unknown key is an error, and so is a bad value set later.

config.py and sweep_config.py both build on it; it lives apart so that neither imports the other for it.
"""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
