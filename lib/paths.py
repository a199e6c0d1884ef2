"""Where things live. KNLP_RESULTS moves results/ (the tests use it to stay out of yours)."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.abspath(os.environ.get("KNLP_RESULTS") or os.path.join(REPO, "results"))
RUNS = os.path.join(RESULTS, "runs")
MATRICES = os.path.join(RESULTS, "matrices")
ARCHIVE = os.path.join(RESULTS, "archive")
# the committed table of benchmark rows (scripts/bench/table.py); KNLP_BENCHMARKS moves it
BENCHMARKS = os.path.abspath(os.environ.get("KNLP_BENCHMARKS") or
                             os.path.join(REPO, "results", "benchmarks.csv"))
