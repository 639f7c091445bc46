"""Pictures of a sweep: matplotlib PNGs for papers, one self-contained plotly HTML for browsing."""

from dashboards.report import write_report

__all__ = ["write_report"]
