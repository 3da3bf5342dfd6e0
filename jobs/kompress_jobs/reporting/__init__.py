"""What a run tells: the typed report (results.py) and everything rendered from it: report.md
(report.py, profile_report.py), charts, the console table, the Job's summary, library output."""
