"""Gymnasium environments of the GASIL toolkit."""

from .point_mass import PointMassEnv

__all__ = ["PointMassEnv"]
