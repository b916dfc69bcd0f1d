"""RunSummary (moved to :mod:`vggish_tf2.corpus.summary`; this name keeps old imports working)."""
from vggish_tf2.corpus.summary import RunSummary

__all__ = ["RunSummary"]
