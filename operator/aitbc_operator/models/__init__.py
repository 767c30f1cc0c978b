"""Pydantic models of the custom resources: the single source of truth for the CRD schemas."""

from .base import Condition, parse_duration
from .database import AitbcDatabaseSpec, AitbcDatabaseStatus, DeletionPolicy, Service
from .node import AitbcNodeSpec, AitbcNodeStatus, RolloutStatus
from .volume_report import ChainVolumeReport, VolumeReport

__all__ = [
    "AitbcDatabaseSpec",
    "AitbcDatabaseStatus",
    "AitbcNodeSpec",
    "AitbcNodeStatus",
    "ChainVolumeReport",
    "Condition",
    "DeletionPolicy",
    "RolloutStatus",
    "Service",
    "VolumeReport",
    "parse_duration",
]
