"""Shared training core of domainvlm: knows nothing of any particular domain."""

import os

# albumentations calls PyPI for an update check at import unless told not to (docs/dependencies.md).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
