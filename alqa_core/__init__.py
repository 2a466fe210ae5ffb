"""alqa core: pure, dagster-free building blocks of an active-learning
annotation campaign for 3D CT organ segmentation."""

from alqa_core.errors import AlqaInputError

__all__ = ["AlqaInputError"]
__version__ = "0.1.0"
