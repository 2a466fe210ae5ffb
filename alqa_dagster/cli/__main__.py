"""``python -m alqa_dagster.cli``: the same as the ``alqa`` command."""

import sys

from alqa_dagster.cli import main

sys.exit(main())
