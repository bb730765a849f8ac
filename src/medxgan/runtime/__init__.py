"""Shared plumbing for every trainer and tool: errors, atomic files, seeding, devices, run directories."""

from medxgan.runtime.errors import MedxganError
from medxgan.runtime.runs import RunDir
from medxgan.runtime.seeding import seed_everything
from medxgan.runtime.device import pick_device

__all__ = ["MedxganError", "RunDir", "seed_everything", "pick_device"]
