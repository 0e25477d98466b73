"""atlib: a replication of Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017)."""

import logging

__version__ = "0.1.0"

# Library code reports through loggers named after its modules (``atlib.training.engine``, ...): silent unless the
# application configures logging (``python -m atlib`` prints them; in a notebook:
# ``logging.basicConfig(level=logging.INFO)``).
logging.getLogger(__name__).addHandler(logging.NullHandler())
