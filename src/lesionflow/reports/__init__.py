"""What people read: the analysis and training-report notebooks' tables and figures, the
comparison of runs, the notebook runner and run views."""
