"""From trial folders to tables, report and trackers: aggregation, selection on validation, ensembles,
statistics, figures, LaTeX. Reads what `run` wrote (through `store`); `run` never imports it."""
