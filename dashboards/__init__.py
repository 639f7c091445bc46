"""Pictures of a sweep: matplotlib PNGs for papers, one self-contained plotly HTML for browsing."""

from dashboards.report import ComputeOptimal, write_report

__all__ = ["ComputeOptimal", "write_report"]
