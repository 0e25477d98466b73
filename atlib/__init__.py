"""atlib: a replication of Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017)."""

__version__ = "0.1.0"
