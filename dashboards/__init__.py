"""Pictures of a sweep drawn from its fits: matplotlib PNGs for papers, one self-contained plotly HTML
for browsing. Nothing here fits or detects: thresholds, peaks and lines come from a SweepFits."""

from dashboards.labels import Labels
from dashboards.report import Picture, report_pictures, write_report

__all__ = ["Labels", "Picture", "report_pictures", "write_report"]
