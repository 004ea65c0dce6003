"""Configuration: `Settings` and the spec's module constants."""

from faultmaven.config.config import Settings

__all__ = ["Settings"]
