# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""``python -m mstl_monai.pipeline``: the pipeline runner's command line."""

import sys

from mstl_monai.pipeline.cli import main

sys.exit(main())
