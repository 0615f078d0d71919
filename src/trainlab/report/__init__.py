"""Study reports: a multirun's jobs as a table (CSV, Markdown) and plots, for any axes.

`python -m trainlab.report <multirun dir>`; also written automatically when a multirun ends
(trainlab.report.hydra_callback).
"""
